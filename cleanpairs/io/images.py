"""Loading one image from a path or from bytes, with a reason when it cannot be done."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from cleanpairs.errors import first_line


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
        raise ImageProblem(f"image file not found: {_shown(ref)}") from None
    except OSError as err:
        raise ImageProblem(f"image file unreadable: {err.strerror or err}") from None
    except ValueError:
        # A NUL byte or a lone surrogate: no file system has such a name.
        raise ImageProblem(f"image path is not a valid file name: {_shown(ref)}") from None
    if not data:
        raise ImageProblem(f"image file is empty: {_shown(ref)}")
    return data


def _shown(ref: str) -> str:
    """``ref`` as it is when printable, else quoted with escapes, so a status stays one line."""
    return ref if ref.isprintable() else ascii(ref)


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
    except UnidentifiedImageError:
        # PIL's message names the BytesIO object by its address, which would make the
        # status, and so the scores file, differ from run to run.
        raise ImageProblem("image cannot be decoded: not an image format PIL can read") from None
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        # A damaged header can claim billions of pixels; PIL refuses with its own error.
        raise ImageProblem(f"image cannot be decoded: {first_line(err)}") from None
