"""Reading webdataset tar shards in img2dataset's layout, streamed with :mod:`tarfile`.

A shard holds, per sample, ``{key}.jpg`` (or ``.jpeg``, ``.png``, ``.webp``), ``{key}.txt``
(the caption) and ``{key}.json`` (img2dataset's metadata: ``key``, ``url``, ``uid``, ...); a
sidecar ``{shard}.parquet`` beside ``{shard}.tar`` holds the same metadata for every sample,
downloaded or not. A shard is read member by member in one pass (nothing is extracted to disk)
into a table with the columns ``key``, ``image`` (the encoded bytes), ``caption`` and the json's
scalar fields, so that it is the same kind of corpus as a parquet shard.
"""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cleanpairs.errors import InputError

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
TAR_SUFFIXES = (".tar", ".tgz", ".tar.gz")
FIXED_COLUMNS = ("key", "image", "caption")


def is_tar(path: str | os.PathLike) -> bool:
    """True for a file name a webdataset shard has (``.tar``, ``.tar.gz``, ``.tgz``)."""
    return os.fspath(path).endswith(TAR_SUFFIXES)


def sidecar_of(tar: Path) -> Path:
    """img2dataset's metadata file beside a shard: ``00000.tar`` -> ``00000.parquet``."""
    name = tar.name
    for suffix in TAR_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return tar.with_name(f"{name}.parquet")


def _split_member(name: str) -> tuple[str, str]:
    """webdataset's rule: the key is the path up to the first dot of the file name."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), (ext.lower() if dot else "")


def _samples(path: Path) -> list[dict]:
    """Every sample of one tar, in order: its key and its members by extension."""
    samples: dict[str, dict[str, bytes]] = {}
    try:
        with tarfile.open(path, "r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, ext = _split_member(member.name)
                if not ext or not key.rpartition("/")[2]:  # no extension, or a hidden file
                    continue
                handle = tar.extractfile(member)
                samples.setdefault(key, {})[ext] = handle.read() if handle is not None else b""
    except (tarfile.TarError, OSError, EOFError) as err:
        raise InputError(f"cannot read {path} as a tar shard: {err or type(err).__name__}") from None
    return [{"__key__": key, **members} for key, members in samples.items()]


def _sidecar_rows(path: Path) -> dict[str, dict]:
    """The sidecar's rows by key (empty when there is none or it has no key column)."""
    sidecar = sidecar_of(path)
    if not sidecar.is_file():
        return {}
    try:
        table = pq.read_table(sidecar)
    except (pa.ArrowException, OSError) as err:
        raise InputError(f"cannot read {sidecar} (the metadata beside {path.name}): {err}") from None
    if "key" not in table.column_names:
        return {}
    return {str(row["key"]): row for row in table.to_pylist()}


def _metadata(sample: dict, sidecar: dict[str, dict], path: Path) -> dict:
    if "json" in sample:
        try:
            found = json.loads(sample["json"])
        except ValueError:
            raise InputError(
                f"{path}: sample {sample['__key__']!r} has a .json that is not valid JSON"
            ) from None
        return found if isinstance(found, dict) else {}
    return dict(sidecar.get(sample["__key__"].rpartition("/")[2], {}))


def read_tar_rows(path: Path) -> list[dict]:
    """The rows of one tar shard: ``key``, ``image`` (bytes or ``None``), ``caption``, metadata.

    The key is the json's ``key`` where it has one (img2dataset writes the sample key there),
    else the sample's ``__key__``. Metadata comes from each sample's json, else from the sidecar
    parquet. Caption: the ``.txt``, else the metadata's ``caption``.
    """
    sidecar = _sidecar_rows(path)
    rows = []
    for sample in _samples(path):
        meta = _metadata(sample, sidecar, path)
        image = next((sample[ext] for ext in IMAGE_EXTENSIONS if ext in sample), None)
        caption = sample["txt"].decode("utf-8", "replace") if "txt" in sample else meta.get("caption")
        key = meta.get("key")
        row = {
            "key": str(key) if key not in (None, "") else sample["__key__"],
            "image": image,
            "caption": caption if isinstance(caption, str) else None,
        }
        for name, value in meta.items():
            if name not in row and name not in FIXED_COLUMNS and not name.startswith("__"):
                row[name] = value
        rows.append(row)
    return rows


def _column(values: list) -> pa.Array:
    """A metadata column: the type pyarrow infers (numbers, strings, lists such as embeddings),
    or JSON text where the values do not share one type."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else json.dumps(v) for v in values], pa.string())


def read_tar_shards(paths: list[Path]) -> tuple[pa.Table, list[int]]:
    """All samples of ``paths`` as one table (columns shared by every shard, missing values null),
    and the number of rows each shard gave. ``image`` and ``caption`` are left out where no sample
    has one.

    Raises
    ------
    InputError
        A file is not a readable tar, or a json is not valid JSON.
    """
    shard_rows = [read_tar_rows(p) for p in paths]
    rows = [row for shard in shard_rows for row in shard]
    names = list(dict.fromkeys(name for row in rows for name in row))
    columns = {"key": pa.array([r["key"] for r in rows], pa.string())}
    # A shard with no image or no caption member at all gets no such column, so the role check
    # names the columns it did find (the json's fields) and the flag that picks one.
    for name, kind in (("image", pa.binary()), ("caption", pa.string())):
        if any(r[name] is not None for r in rows):
            columns[name] = pa.array([r[name] for r in rows], kind)
    for name in names:
        if name not in columns and name not in FIXED_COLUMNS:
            columns[name] = _column([r.get(name) for r in rows])
    return pa.table(columns), [len(shard) for shard in shard_rows]
