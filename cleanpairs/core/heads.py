"""Small projection heads trained over frozen encoder embeddings."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cleanpairs.methods.base import Heads


class ProjectionHead(nn.Module):
    """Two-layer MLP with a linear shortcut, mapping one modality into the shared space."""

    def __init__(self, d_in: int, d_out: int, hidden: int) -> None:
        super().__init__()
        self.shortcut = nn.Linear(d_in, d_out)
        self.mlp = nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.shortcut(x) + self.mlp(x), dim=-1)


class TorchHeads(Heads):
    """An image head and a text head; embeds numpy arrays into unit vectors of the shared space."""

    def __init__(self, image_head: nn.Module, text_head: nn.Module, device: torch.device) -> None:
        self.image_head = image_head.eval()
        self.text_head = text_head.eval()
        self.device = device

    @torch.inference_mode()
    def _embed(self, head: nn.Module, x: np.ndarray, batch: int = 8192) -> np.ndarray:
        out = [
            head(torch.from_numpy(np.ascontiguousarray(x[i : i + batch], dtype=np.float32)).to(self.device))
            .float()
            .cpu()
            .numpy()
            for i in range(0, len(x), batch)
        ]
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        return self._embed(self.image_head, images)

    def embed_texts(self, texts: np.ndarray) -> np.ndarray:
        return self._embed(self.text_head, texts)
