"""Reading clip-retrieval's embedding folders as a corpus with precomputed embeddings.

``clip-retrieval inference`` writes ``img_emb/img_emb_N.npy`` and ``text_emb/text_emb_N.npy``
(float16 or float32 matrices) aligned row for row with ``metadata/metadata_N.parquet``. Such a
folder reads as its metadata tables with ``image_emb`` / ``text_emb`` columns appended, ready for
``--encoder precomputed``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pyarrow as pa

from cleanpairs.errors import InputError

_NUMBER = re.compile(r"_(\d+)\.[a-z]+$")
EMBEDDING_FOLDERS = {"img_emb": "image_emb", "text_emb": "text_emb"}


def is_clip_retrieval_folder(source: str | os.PathLike) -> bool:
    """True for a folder in clip-retrieval's layout: ``metadata/`` beside ``img_emb/`` or ``text_emb/``."""
    path = Path(os.fspath(source))
    return (path / "metadata").is_dir() and any((path / sub).is_dir() for sub in EMBEDDING_FOLDERS)


def _numbered(folder: Path, prefix: str, suffix: str) -> dict[int, Path]:
    found = {}
    for path in folder.glob(f"{prefix}_*{suffix}"):
        number = _NUMBER.search(path.name)
        if number is not None:
            found[int(number.group(1))] = path
    return found


def metadata_shards(source: str | os.PathLike) -> list[Path]:
    """The metadata parquet files of a clip-retrieval folder, in shard order."""
    shards = _numbered(Path(source) / "metadata", "metadata", ".parquet")
    if not shards:
        raise InputError(f"{Path(source) / 'metadata'} holds no metadata_N.parquet files")
    return [shards[n] for n in sorted(shards)]


def _vectors(source: Path, sub: str, numbers: list[int], counts: list[int]) -> pa.Array:
    shards = _numbered(source / sub, sub, ".npy")
    missing = [n for n in numbers if n not in shards]
    if missing:
        raise InputError(f"{source / sub} lacks {sub}_{missing[0]}.npy for metadata_{missing[0]}.parquet")
    parts = []
    for number, rows in zip(numbers, counts, strict=True):
        try:
            matrix = np.load(shards[number], mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as err:
            raise InputError(f"cannot read {shards[number]}: {err}") from None
        if matrix.ndim != 2 or matrix.shape[0] != rows:
            raise InputError(
                f"{shards[number]} holds an array of shape {matrix.shape}, but "
                f"metadata_{number}.parquet has {rows} rows; they must align row for row"
            )
        parts.append(np.asarray(matrix, dtype=np.float32))
    matrix = np.concatenate(parts)
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])


def attach_embeddings(table: pa.Table, source: str | os.PathLike, counts: list[int]) -> pa.Table:
    """``table`` (the metadata shards, ``counts`` rows each) with the embedding columns appended.

    Raises
    ------
    InputError
        An embedding shard is missing, unreadable, or not aligned with its metadata shard, or the
        metadata already has a column of that name.
    """
    root = Path(source)
    numbers = sorted(_numbered(root / "metadata", "metadata", ".parquet"))
    for sub, column in EMBEDDING_FOLDERS.items():
        if not (root / sub).is_dir():
            continue
        if column in table.column_names:
            raise InputError(f"{root}/metadata already has a column {column!r}; {sub}/ cannot add it")
        table = table.append_column(column, _vectors(root, sub, numbers, counts))
    return table
