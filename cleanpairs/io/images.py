"""Loading one image from a path or from bytes, with a reason when it cannot be done."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, UnidentifiedImageError


class ImageProblem(Exception):
    """An image cannot be read; ``str(problem)`` is the row's ``cp_status``."""


def read_image_bytes(ref: str | bytes | None) -> bytes:
    """Return the encoded bytes of an image given as an absolute path or as bytes.

    Raises
    ------
    ImageProblem
        The reference is empty, a URL, a missing or unreadable file.
    """
    if ref is None:
        raise ImageProblem("no image")
    if isinstance(ref, bytes | bytearray | memoryview):
        if len(ref) == 0:
            raise ImageProblem("image bytes are empty")
        return bytes(ref)
    if ref.startswith(("http://", "https://")):
        raise ImageProblem("image is a URL; download the corpus first (for example with img2dataset)")
    path = Path(ref)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageProblem(f"image file not found: {ref}") from None
    except OSError as err:
        raise ImageProblem(f"image file unreadable: {err.strerror or err}") from None
    if not data:
        raise ImageProblem(f"image file is empty: {ref}")
    return data


def decode_image(data: bytes) -> Image.Image:
    """Decode image bytes into an RGB picture.

    Raises
    ------
    ImageProblem
        The bytes are not an image PIL can decode.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise ImageProblem(f"image cannot be decoded: {err}") from None
