"""Reading a scores table (one file, or a folder of score shards) for a review page: one pass
for the counts and the selection, then the selected rows only, then their rematch partners."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cleanpairs.errors import InputError
from cleanpairs.io.scores import iter_batches, open_scores
from cleanpairs.io.tables import ImageFolders
from cleanpairs.review.select import Selection, Selector
from cleanpairs.review.stats import ScoreStats
from cleanpairs.schema import (
    P_CLEAN,
    REMATCH_KEY,
    REMATCH_SCORE,
    ROW_NUMBER_KEY,
    SIMILARITY,
    SOFT_LABEL,
    STATUS,
    RunMetadata,
)


@dataclass
class Shard:
    """One scores file of the table: its schema, run metadata, image folders, rows and first
    global row. Each pass opens the file afresh and closes it after: an open parquet handle
    holds on to buffers of what it read, which over thousands of shards would add up."""

    path: Path
    schema: pa.Schema
    meta: RunMetadata
    folders: ImageFolders
    start: int
    rows: int

    def batches(self, columns: list[str]) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
        """The shard's ``columns`` a bounded batch at a time, with each row's global number."""
        offset = self.start
        with pq.ParquetFile(self.path) as handle:
            for batch in iter_batches(handle, columns=columns):
                yield batch, np.arange(offset, offset + batch.num_rows, dtype=np.int64)
                offset += batch.num_rows


def open_shards(source: str | os.PathLike) -> list[Shard]:
    """The scores files of ``source``: the file itself, or every ``*.parquet`` in the folder in
    name order, read as one table.

    Raises
    ------
    InputError
        ``source`` is missing, a folder without parquet files, or holds a file that is not a
        scores file, or shards that disagree on the key column.
    """
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix == ".parquet" and p.is_file())
        if not files:
            raise InputError(f"{source} is a folder with no .parquet scores files")
    else:
        files = [path]
    shards, start = [], 0
    for file in files:
        handle, meta = open_scores(file)
        with handle:
            rows, schema = handle.metadata.num_rows, handle.schema_arrow
        folders = ImageFolders.from_metadata(meta.extra, rows, file)
        shards.append(Shard(file, schema, meta, folders, start, rows))
        start += rows
    keys = {s.meta.roles.get("key") for s in shards}
    if len(keys) > 1:
        raise InputError(f"the shards of {source} use different key columns: {', '.join(map(str, keys))}")
    return shards


def _truth_type_check(shards: list[Shard], truth: str) -> None:
    for shard in shards:
        schema = shard.schema
        if truth not in schema.names:
            present = ", ".join(schema.names)
            raise InputError(f"no column {truth!r} in {shard.path}; columns present: {present}")
        if not pa.types.is_boolean(schema.field(truth).type):
            raise InputError(
                f"--truth column {truth!r} must be boolean (true for clean pairs), "
                f"but it holds {schema.field(truth).type}"
            )


def scan(
    shards: list[Shard], selector: Selector, stats: ScoreStats, truth: str | None
) -> tuple[Selection, ScoreStats]:
    """Stream every shard's scores (and truth) through the selector and the counts.

    Raises
    ------
    InputError
        The truth column is missing from a shard or is not boolean.
    """
    if truth is not None:
        _truth_type_check(shards, truth)
    columns = [P_CLEAN, STATUS] + ([truth] if truth else [])
    for shard in shards:
        for batch, _ in shard.batches(columns):
            p = batch.column(P_CLEAN).to_numpy(zero_copy_only=False).astype(np.float64)
            is_clean = None
            if truth:
                is_clean = np.asarray(pc.fill_null(batch.column(truth), False).to_numpy(zero_copy_only=False))
            statuses = batch.column(STATUS).to_pylist()
            selector.offer(p)
            stats.offer(p, statuses, is_clean)
    return selector.result(), stats


def _number(value: object) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def read_rows(
    shards: list[Shard], rows: np.ndarray, truth: str | None, image: Callable[[int, str | bytes | None], dict]
) -> dict[int, dict]:
    """The page's record of each selected row (global row numbers), by row: key, caption, the
    ``cp_*`` values and, with a truth column, whether it is clean, plus what ``image(row, ref)``
    returns for the row's resolved image reference (a path or bytes). ``image`` is called while
    the batch is read, so no image bytes are held beyond one batch.

    Raises
    ------
    InputError
        A relative image path where a shard's metadata does not say where its images are.
    """
    roles = shards[0].meta.roles
    key_col, image_col, caption_col = roles.get("key"), roles.get("image"), roles.get("caption")
    wanted = np.asarray(rows, np.int64)
    out: dict[int, dict] = {}
    for shard in shards:
        names = shard.schema.names
        columns = [P_CLEAN, SOFT_LABEL, SIMILARITY, REMATCH_KEY, REMATCH_SCORE, STATUS]
        columns += [c for c in (key_col, image_col, caption_col, truth) if c and c in names]
        for batch, global_rows in shard.batches(columns):
            hit = np.isin(global_rows, wanted)
            if not hit.any():
                continue
            picked = batch.filter(pa.array(hit))
            picked_rows = global_rows[hit]
            data = picked.to_pydict()
            images: list = [None] * len(picked_rows)
            if image_col in data:
                runs = shard.folders.index(int(global_rows[0] - shard.start), batch.num_rows)[hit]
                images = shard.folders.resolve(data[image_col], runs)
            for i, row in enumerate(picked_rows.tolist()):
                key = row if key_col in (None, ROW_NUMBER_KEY) else data[key_col][i]
                out[row] = {
                    "row": row,
                    "key": _text(key),
                    "caption": _text(data[caption_col][i]) if caption_col in data else None,
                    "p_clean": _number(data[P_CLEAN][i]),
                    "soft_label": _number(data[SOFT_LABEL][i]),
                    "similarity": _number(data[SIMILARITY][i]),
                    "status": _text(data[STATUS][i]),
                    "rematch_key": _text(data[REMATCH_KEY][i]),
                    "rematch_score": _number(data[REMATCH_SCORE][i]),
                    "truth": bool(data[truth][i]) if truth and data[truth][i] is not None else None,
                    **image(row, images[i]),
                }
    return out


def partner_captions(shards: list[Shard], keys: set[str]) -> dict[str, str | None]:
    """The caption of each row whose key (as text) is in ``keys``: one pass over the key and
    caption columns, holding only the captions asked for."""
    roles = shards[0].meta.roles
    key_col, caption_col = roles.get("key"), roles.get("caption")
    found: dict[str, str | None] = {}
    if not keys or caption_col is None:
        return found
    by_row = key_col in (None, ROW_NUMBER_KEY)
    for shard in shards:
        columns = [caption_col] + ([] if by_row else [key_col])
        for batch, global_rows in shard.batches(columns):
            batch_keys = pa.array(global_rows) if by_row else batch.column(key_col)
            as_text = pc.cast(batch_keys, pa.string())
            hit = pc.is_in(as_text, value_set=pa.array(sorted(keys), pa.string()))
            captions = batch.column(caption_col).filter(hit).to_pylist()
            found.update(zip(as_text.filter(hit).to_pylist(), captions, strict=True))
    return found
