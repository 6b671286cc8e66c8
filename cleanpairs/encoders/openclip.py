"""The ``openclip:`` encoders: any open_clip model, by pretrained tag or local checkpoint.

``openclip:ARCH/TAG`` loads a pretrained tag (its weights must be fetchable or cached);
``openclip:ARCH:PATH`` loads a local checkpoint. An architecture open_clip does not know
can be given as ``ARCH.json`` (an open_clip model config) beside the checkpoint.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cleanpairs.device import resolve_device
from cleanpairs.encoders.base import unit_rows
from cleanpairs.encoders.fetch import check_weights_available
from cleanpairs.errors import EncoderError, first_line


def parse_openclip_id(encoder_id: str) -> tuple[str, str | None, Path | None]:
    """Split ``openclip:ARCH/TAG`` or ``openclip:ARCH:PATH`` into (arch, tag, path)."""
    spec = encoder_id.removeprefix("openclip:")
    if ":" in spec:
        arch, path = spec.split(":", 1)
        if not arch or not path:
            raise EncoderError(f"encoder {encoder_id!r} must read openclip:ARCH:PATH")
        return arch, None, Path(path)
    if "/" in spec:
        arch, tag = spec.split("/", 1)
        if arch and tag:
            return arch, tag, None
    raise EncoderError(f"encoder {encoder_id!r} must read openclip:ARCH/TAG or openclip:ARCH:PATH")


def file_digest(path: Path) -> str:
    digest = hashlib.sha1(usedforsecurity=False)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class OpenClipEncoder:
    """An open_clip model used frozen: its image and text towers share one space."""

    aligned = True

    def __init__(self, encoder_id: str, arch: str, pretrained: str, cache_id: str, device: str) -> None:
        import open_clip

        self.id = encoder_id
        self.cache_id = cache_id
        self.device = resolve_device(device)
        try:
            model, _, transform = open_clip.create_model_and_transforms(
                arch, pretrained=pretrained, device=self.device
            )
        except Exception as err:  # open_clip raises many types for a missing or bad checkpoint
            first = first_line(err)
            raise EncoderError(f"cannot load open_clip model {arch!r} ({pretrained}): {first}") from None
        self.model = model.eval()
        self.transform = transform
        self.tokenizer = open_clip.get_tokenizer(arch)

    @classmethod
    def from_id(cls, encoder_id: str, *, device: str = "auto") -> OpenClipEncoder:
        import open_clip

        arch, tag, path = parse_openclip_id(encoder_id)
        if path is not None:
            if not path.is_file():
                raise EncoderError(f"open_clip checkpoint not found: {path}")
            config = path.parent / f"{arch}.json"
            if arch not in open_clip.list_models() and config.is_file():
                open_clip.add_model_config(config)
            if arch not in open_clip.list_models():
                raise EncoderError(
                    f"open_clip has no architecture {arch!r} and no {config.name} lies beside the "
                    "checkpoint; see open_clip.list_models()"
                )
            return cls(encoder_id, arch, str(path), f"{encoder_id}@{file_digest(path)}", device)
        if arch not in open_clip.list_models():
            raise EncoderError(f"open_clip has no architecture {arch!r}; see open_clip.list_models()")
        check_weights_available(arch, tag, open_clip.get_pretrained_cfg(arch, tag))
        return cls(encoder_id, arch, tag, encoder_id, device)

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return self.transform(image).numpy()

    @torch.inference_mode()
    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(pixels).to(self.device)
        return unit_rows(self.model.encode_image(batch).float().cpu().numpy())

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.encode_pixels(np.stack([self.preprocess(im) for im in images]))

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        tokens = self.tokenizer(list(texts)).to(self.device)
        return unit_rows(self.model.encode_text(tokens).float().cpu().numpy())
