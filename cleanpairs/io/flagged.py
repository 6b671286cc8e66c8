"""The per-shard files of a sharded rematch: the flagged pairs' embeddings, memory-mapped.

Each scored shard with ``--rematch`` leaves a folder ``_rematch/NAME/`` (written whole, as one
atomic move, before the shard's completion marker): ``described.npy`` and ``captions.npy``
(float32, one row per flagged pair, in the spaces :func:`cleanpairs.core.rematch.match_flagged`
compares), ``rows.npy`` (the pair's row in its shard), ``images.npy`` (its image's row in the
shard's image matrix), ``keys.parquet`` (its key) and ``flagged.json`` (counts). The rematch
step reads the small ones back and joins the matrices of all shards into one memory-mapped
file (:func:`joined_matrix`), one shard open at a time.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cleanpairs.io.atomic import atomic_output

ARRAYS = ("described", "captions", "rows", "images")


@dataclass
class Flagged:
    """One shard's flagged pairs (arrays memory-mapped when read back)."""

    described: np.ndarray
    captions: np.ndarray
    rows: np.ndarray
    images: np.ndarray
    keys: pa.Array
    n_images: int

    def __len__(self) -> int:
        return len(self.rows)


def write_flagged(folder: str | os.PathLike, flagged: Flagged) -> None:
    """Write one shard's flagged pairs into ``folder``, the whole folder appearing at once."""
    with atomic_output(folder, directory=True) as tmp:
        for name in ARRAYS:
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(getattr(flagged, name)))
        pq.write_table(pa.table({"key": flagged.keys}), tmp / "keys.parquet")
        (tmp / "flagged.json").write_text(json.dumps({"pairs": len(flagged), "images": flagged.n_images}))


def read_flagged(folder: str | os.PathLike) -> Flagged:
    """One shard's flagged pairs: rows, images and keys in memory, the matrices left out (empty)."""
    folder = Path(folder)
    info = json.loads((folder / "flagged.json").read_text())
    none = np.zeros((0, 0), dtype=np.float32)
    return Flagged(none, none, np.load(folder / "rows.npy"), np.load(folder / "images.npy"),
                   keys=pq.read_table(folder / "keys.parquet").column("key").combine_chunks(),
                   n_images=int(info["images"]))  # fmt: skip


@contextlib.contextmanager
def joined_matrix(folders: list[Path], name: str, scratch: Path) -> Iterator[np.ndarray]:
    """The ``name`` matrices (``described`` or ``captions``) of ``folders``, one after another,
    in one memory-mapped float32 file at ``scratch``, removed when the block ends (and, after a
    ``kill -9``, by the next join to the same place)."""
    shapes = [np.load(folder / f"{name}.npy", mmap_mode="r").shape for folder in folders]
    dim = max((shape[1] for shape in shapes if shape[0]), default=0)
    total = sum(shape[0] for shape in shapes)
    try:
        with atomic_output(scratch) as tmp:
            joined = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(total, dim))
            at = 0
            for folder, (rows, _) in zip(folders, shapes, strict=True):
                if rows:
                    joined[at : at + rows] = np.load(folder / f"{name}.npy", mmap_mode="r")
                    at += rows
            joined.flush()
            yield joined
            del joined
    finally:
        scratch.unlink(missing_ok=True)


def write_matches(path: str | os.PathLike, partner: np.ndarray, margin: np.ndarray) -> None:
    """The rematch over all shards' flagged pairs, saved at once so a resumed run does not redo it."""
    with atomic_output(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, partner=partner, margin=margin)


def read_matches(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(partner, margin)`` as :func:`write_matches` saved them."""
    with np.load(path) as saved:
        return saved["partner"], saved["margin"]
