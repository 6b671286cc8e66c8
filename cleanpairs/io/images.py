"""Loading one image from a path or from bytes, with a reason when it cannot be done."""

from __future__ import annotations

import io
import re
import struct
import warnings
import zlib
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from cleanpairs.errors import ParameterError

DEFAULT_MAX_PIXELS = 89_478_485
"""Pillow's own decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``: a 256 MiB RGBA
picture): an RGB decode of this size takes about 256 MiB, which every worker can afford."""

_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")

# What Pillow's decoders raise on damaged data, besides OSError and ValueError.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error)


class ImageProblem(Exception):
    """An image cannot be read; ``str(problem)`` is the row's ``cp_status``."""


def check_max_pixels(max_pixels: int | None) -> int:
    """The pixel limit to decode images under: ``max_pixels``, or :data:`DEFAULT_MAX_PIXELS`.

    A limit above Pillow's (``PIL.Image.MAX_IMAGE_PIXELS``) is refused rather than obeyed by
    raising Pillow's limit for the whole process.

    Raises
    ------
    ParameterError
        ``max_pixels`` is not a positive integer, or exceeds Pillow's limit.
    """
    if max_pixels is None:
        ceiling = Image.MAX_IMAGE_PIXELS
        return DEFAULT_MAX_PIXELS if ceiling is None else min(DEFAULT_MAX_PIXELS, ceiling)
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ParameterError(f"--max-image-pixels must be a positive integer; got {max_pixels!r}")
    ceiling = Image.MAX_IMAGE_PIXELS
    if ceiling is not None and max_pixels > ceiling:
        raise ParameterError(
            f"--max-image-pixels must be at most {ceiling} (Pillow's decompression-bomb limit, "
            f"PIL.Image.MAX_IMAGE_PIXELS); got {max_pixels}"
        )
    return max_pixels


def read_image_bytes(ref: str | bytes | None) -> bytes:
    """Return the encoded bytes of an image given as an absolute path or as bytes.

    Raises
    ------
    ImageProblem
        The reference is empty, a URL, a missing or unreadable file, or not a path or bytes.
    """
    if ref is None:
        raise ImageProblem("no image")
    if isinstance(ref, bytes | bytearray | memoryview):
        if len(ref) == 0:
            raise ImageProblem("image bytes are empty")
        return bytes(ref)
    if not isinstance(ref, str):
        raise ImageProblem(f"image is neither a path nor bytes but {type(ref).__name__}")
    if ref.startswith(("http://", "https://")):
        raise ImageProblem("image is a URL; download the corpus first (for example with img2dataset)")
    path = Path(ref)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageProblem(f"image file not found: {_shown(ref)}") from None
    except IsADirectoryError:
        raise ImageProblem(f"image path is a folder: {_shown(ref)}") from None
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


def _too_large(pixels: int | str, limit: int) -> ImageProblem:
    return ImageProblem(f"image too large ({pixels} pixels, limit {limit})")


def _open_checked(data: bytes, max_pixels: int) -> Image.Image:
    """Open ``data`` lazily (Pillow reads only the header) and refuse it above ``max_pixels``."""
    try:
        # Pillow warns between its limit and twice it, and raises above; both mean too large
        # here, since ``max_pixels`` never exceeds Pillow's limit. (catch_warnings swaps the
        # process's filters for this block; a thread racing it could at worst see this one
        # filter, which only turns Pillow's bomb warning into its error.)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        found = _BOMB_PIXELS.search(str(err))
        raise _too_large(found.group(1) if found else f"over {max_pixels}", max_pixels) from None
    width, height = img.size
    if width * height > max_pixels:
        img.close()
        raise _too_large(width * height, max_pixels)
    return img


def decode_image(data: bytes, *, max_pixels: int | None = None) -> Image.Image:
    """Decode image bytes into an RGB picture, refusing pictures of more than ``max_pixels``.

    The size is read from the header before anything is decoded, so a decompression bomb
    costs nothing. ``max_pixels`` defaults to :data:`DEFAULT_MAX_PIXELS`.

    Raises
    ------
    ImageProblem
        The picture is larger than the limit (``image too large (N pixels, limit L)``), or the bytes
        are not an image Pillow can decode.
    """
    limit = check_max_pixels(max_pixels)
    try:
        with _open_checked(data, limit) as img:
            return img.convert("RGB")
    except UnidentifiedImageError:
        # Pillow's own message names the BytesIO's memory address, which would make cp_status
        # differ from run to run.
        raise ImageProblem("image cannot be decoded: not an image format Pillow reads") from None
    except _DECODE_ERRORS as err:
        raise ImageProblem(f"image cannot be decoded: {err}") from None
