"""Small projection heads trained over frozen encoder embeddings."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from cleanpairs.contract import Heads


class ProjectionHead(nn.Module):
    """Two-layer MLP with a linear shortcut, mapping one modality into the shared space.

    ``hidden=0`` leaves the MLP out: a linear projection.

    With ``identity_init`` (input and output sizes equal) the shortcut starts as the identity
    and the MLP's output as zero, so an aligned encoder's own similarity is where training
    starts rather than something to relearn.
    """

    def __init__(self, d_in: int, d_out: int, hidden: int, *, identity_init: bool = False) -> None:
        super().__init__()
        self.shortcut = nn.Linear(d_in, d_out)
        self.mlp = (
            nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_out)) if hidden else None
        )
        if identity_init:
            if d_in != d_out:
                raise ValueError("identity_init needs equal input and output sizes")
            with torch.no_grad():
                self.shortcut.weight.copy_(torch.eye(d_in))
                self.shortcut.bias.zero_()
                if self.mlp is not None:
                    self.mlp[-1].weight.zero_()
                    self.mlp[-1].bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.shortcut(x) if self.mlp is None else self.shortcut(x) + self.mlp(x)
        return nn.functional.normalize(y, dim=-1)


class UnitNorm(nn.Module):
    """A head without weights: rows put on the unit sphere (TSVC's Assistant leaves captions in
    their encoder's space)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(x, dim=-1)


def head_spec(head: nn.Module) -> dict[str, Any]:
    """What :func:`build_head` needs to make ``head`` again (its weights aside), as plain data.

    Raises
    ------
    TypeError
        ``head`` is neither a :class:`ProjectionHead` nor a :class:`UnitNorm`.
    """
    if isinstance(head, UnitNorm):
        return {"kind": "unit"}
    if isinstance(head, ProjectionHead):
        hidden = head.mlp[0].out_features if head.mlp is not None else 0
        return {
            "kind": "projection",
            "d_in": head.shortcut.in_features,
            "d_out": head.shortcut.out_features,
            "hidden": hidden,
        }
    raise TypeError(f"no spec for a head of type {type(head).__name__}")


def build_head(spec: dict[str, Any]) -> nn.Module:
    """An untrained head of the make ``spec`` (from :func:`head_spec`) describes.

    Raises
    ------
    KeyError, ValueError
        ``spec`` lacks a size or names an unknown kind.
    """
    if spec["kind"] == "unit":
        return UnitNorm()
    if spec["kind"] == "projection":
        return ProjectionHead(int(spec["d_in"]), int(spec["d_out"]), int(spec["hidden"]))
    raise ValueError(f"unknown head kind {spec['kind']!r}")


class TorchHeads(Heads):
    """An image head and a text head; embeds numpy arrays into unit vectors of the shared space."""

    def __init__(self, image_head: nn.Module, text_head: nn.Module, device: torch.device) -> None:
        self.image_head = image_head
        self.text_head = text_head
        self.device = device

    @torch.inference_mode()
    def _embed(self, head: nn.Module, x: np.ndarray, batch: int = 8192) -> np.ndarray:
        was_training = head.training
        head.eval()
        out = [
            head(torch.from_numpy(np.ascontiguousarray(x[i : i + batch], dtype=np.float32)).to(self.device))
            .float()
            .cpu()
            .numpy()
            for i in range(0, len(x), batch)
        ]
        head.train(was_training)
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        return self._embed(self.image_head, images)

    def embed_texts(self, texts: np.ndarray) -> np.ndarray:
        return self._embed(self.text_head, texts)


class AveragedHeads(Heads):
    """Several trained head pairs used as one: the similarity is the mean of theirs.

    Concatenating each pair's unit vectors scaled by ``1/sqrt(k)`` makes the dot product of
    two concatenations equal to the mean of the k cosines, so retrieval with the averaged
    model is plain nearest-neighbour search (as NCR's evaluation averages its two networks).
    """

    def __init__(self, members: list[Heads]) -> None:
        self.members = members

    def _join(self, parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts, axis=1) / np.sqrt(len(parts), dtype=np.float32)

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        return self._join([m.embed_images(images) for m in self.members])

    def embed_texts(self, texts: np.ndarray) -> np.ndarray:
        return self._join([m.embed_texts(texts) for m in self.members])
