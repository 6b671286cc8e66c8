"""Small JPEG thumbnails of the pairs a review page shows (never the full-size image)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from cleanpairs.io.images import ImageProblem, decode_image, read_image_bytes

THUMB_SIDE = 240
"""The longest side of a thumbnail, in pixels (shown at half to a third of it, sharp on HiDPI)."""


def write_thumbnail(ref: str | bytes | None, target: Path, *, max_pixels: int | None = None) -> str | None:
    """Write a JPEG thumbnail of the image ``ref`` (an absolute path or bytes) to ``target``.

    Returns
    -------
    str or None
        ``None`` when written, else why the image cannot be shown (the page shows a placeholder
        with it).
    """
    try:
        picture = decode_image(read_image_bytes(ref), max_pixels=max_pixels)
    except ImageProblem as problem:
        return str(problem)
    picture.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.LANCZOS)
    picture.save(target, format="JPEG", quality=82, optimize=True)
    return None
