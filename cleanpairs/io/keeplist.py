"""Keep-lists: the keys of the kept pairs, as DataComp's uid ``.npy`` or as a text file."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa

from cleanpairs.errors import InputError
from cleanpairs.io.atomic import atomic_output, check_output_path
from cleanpairs.schema import ROW_NUMBER_KEY

UID_DTYPE = np.dtype("u8,u8")
"""DataComp's keep-list: each 32-hex-digit uid as two unsigned 64-bit halves, sorted."""
KEEP_LIST_SUFFIXES = (".npy", ".txt")
_HEX_UID = re.compile(r"[0-9a-fA-F]{32}")


def is_hex_uid(key: object) -> bool:
    """True for a DataComp uid: a string of exactly 32 hexadecimal digits."""
    return isinstance(key, str) and _HEX_UID.fullmatch(key) is not None


def uids_to_array(uids: Iterable[str]) -> np.ndarray:
    """32-hex uids as DataComp stores a keep-list: sorted pairs of unsigned 64-bit halves."""
    out = np.array([(int(u[:16], 16), int(u[16:32], 16)) for u in uids], UID_DTYPE)
    out.sort()
    return out


def array_to_uids(array: np.ndarray) -> list[str]:
    """The uids of a DataComp keep-list array, as 32-hex strings."""
    return [f"{int(hi):016x}{int(lo):016x}" for hi, lo in array.tolist()]


def _key_column(roles: Mapping[str, str | None], names: list[str]) -> str:
    """The column whose values the keep-list holds: the key, or a ``uid`` column beside it."""
    key = roles.get("key")
    if key is None or key == ROW_NUMBER_KEY:
        if "uid" in names:
            return "uid"
        raise InputError("the scores file has no key column (its rows are keyed by row number); no keep-list")
    return key


def write_keep_list(
    batches: Iterable[pa.RecordBatch], roles: Mapping[str, str | None], output: str | os.PathLike
) -> int:
    """Write the keys of the rows in ``batches`` to ``output``; return how many.

    ``.npy``: DataComp's keep-list, a sorted array of dtype ``u8,u8`` (:func:`uids_to_array`),
    from the key column, or from a ``uid`` column where the keys are not 32-hex uids (an
    img2dataset shard keys its samples by number and keeps the uid in its json). ``.txt``: the
    keys one per line, in row order.

    Raises
    ------
    InputError
        Another suffix, or a ``.npy`` where the keys are not 32-hex uids; nothing is written.
    """
    path = check_output_path(output)
    if path.suffix not in KEEP_LIST_SUFFIXES:
        raise InputError(
            f"--format uids writes a .npy (DataComp's uid keep-list) or a .txt of keys; got {path.name}"
        )
    keys: list = []
    uids: list | None = None
    column = None
    for batch in batches:
        if column is None:
            column = _key_column(roles, batch.schema.names)
            uids = [] if column != "uid" and "uid" in batch.schema.names else None
        keys += batch.column(column).to_pylist()
        if uids is not None:
            uids += batch.column("uid").to_pylist()
    if path.suffix == ".npy":
        if uids is not None and not all(is_hex_uid(k) for k in keys):
            column, keys = "uid", uids
        odd = next((k for k in keys if not is_hex_uid(k)), None)
        if odd is not None:
            raise InputError(
                f"a .npy keep-list holds DataComp uids (32 hex digits), but key column {column!r} "
                f"holds {odd!r}; write a .txt keep-list instead"
            )
        with atomic_output(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, uids_to_array(keys))
        return len(keys)
    with atomic_output(path) as tmp:
        Path(tmp).write_text("".join(f"{k}\n" for k in keys), encoding="utf-8")
    return len(keys)
