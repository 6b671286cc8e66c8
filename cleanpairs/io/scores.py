"""Scores files: writing them, reading their metadata, and streaming them through a filter."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cleanpairs.errors import InputError
from cleanpairs.io.atomic import atomic_output, check_output_path, refuse_overwrite
from cleanpairs.io.tables import ImageFolders
from cleanpairs.schema import (
    METADATA_KEY,
    OUTPUT_COLUMNS,
    P_CLEAN,
    RunMetadata,
    require_scores_schema,
)

ROW_GROUP_ROWS = 64 * 1024
STREAM_BATCH_ROWS = 64 * 1024


def with_run_metadata(schema: pa.Schema, meta: RunMetadata) -> pa.Schema:
    """``schema`` with the run metadata stored under the ``cleanpairs`` key, other keys kept."""
    metadata = dict(schema.metadata or {})
    metadata[METADATA_KEY] = meta.to_json()
    return schema.with_metadata(metadata)


def write_scores(table: pa.Table, columns: dict[str, pa.Array], meta: RunMetadata, output: Path) -> None:
    """Write every row of ``table`` plus the ``cp_*`` ``columns`` and ``meta``, atomically.

    ``cp_*`` columns already in ``table`` (it was itself a scores file) are replaced.
    """
    stale = [c for c in table.column_names if c in OUTPUT_COLUMNS]
    if stale:
        table = table.drop_columns(stale)
    for name in OUTPUT_COLUMNS:
        table = table.append_column(name, columns[name])
    table = table.replace_schema_metadata(with_run_metadata(table.schema, meta).metadata)
    with atomic_output(output) as tmp:
        pq.write_table(table, tmp, row_group_size=ROW_GROUP_ROWS)


def open_scores(path: str | os.PathLike) -> tuple[pq.ParquetFile, RunMetadata]:
    """Open a scores file for streaming and return it with its run metadata.

    Raises
    ------
    InputError
        The file is missing, a folder, not parquet, or not written by ``cleanpairs score``
        (no ``cleanpairs`` metadata, or metadata that is damaged or lacks fields).
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder; give the scores file `cleanpairs score` wrote")
    if not path.is_file():
        raise InputError(f"no such file: {path}")
    try:
        handle = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"cannot read {path} as parquet: {reason}") from None
    return handle, require_scores_schema(handle.schema_arrow, path)


def iter_batches(handle: pq.ParquetFile, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    """Stream a parquet file a bounded batch at a time, so memory stays flat as files grow."""
    yield from handle.iter_batches(batch_size=STREAM_BATCH_ROWS, columns=columns)


def keep_mask(batch: pa.RecordBatch, thresh: float) -> pa.BooleanArray:
    """Rows with ``cp_p_clean >= thresh``; rows with no score are not kept."""
    return pc.fill_null(pc.greater_equal(batch.column(P_CLEAN), pa.scalar(thresh, pa.float32())), False)


@dataclass(frozen=True)
class FilterCounts:
    """How many rows a filter kept and rejected."""

    kept: int
    rejected: int


def _tagged_schema(
    schema: pa.Schema, meta: RunMetadata, folders: ImageFolders | None, **filter_info: object
) -> pa.Schema:
    extra = dict(meta.extra)
    extra["filter"] = filter_info
    if folders is not None:
        extra.update(folders.to_metadata())
    tagged = RunMetadata(**{**meta.__dict__, "extra": extra})
    return with_run_metadata(schema, tagged)


def _split_folders(
    handle: pq.ParquetFile, meta: RunMetadata, thresh: float, where: str | os.PathLike
) -> tuple[ImageFolders | None, ImageFolders | None]:
    """The image folders of the kept and of the rejected rows (one pass over ``cp_p_clean``),
    so both outputs still resolve each row's relative image path; ``None`` where the input's
    own metadata does not describe its rows (it is then passed on as it is)."""
    folders = ImageFolders.from_metadata(meta.extra, handle.metadata.num_rows, where)
    if folders.problem is not None:
        return None, None
    runs = len(folders.folders)
    kept, total = np.zeros(runs, np.int64), np.zeros(runs, np.int64)
    offset = 0
    for batch in iter_batches(handle, columns=[P_CLEAN]):
        index = folders.index(offset, batch.num_rows)
        offset += batch.num_rows
        mask = np.asarray(keep_mask(batch, thresh).to_numpy(zero_copy_only=False), dtype=bool)
        kept += np.bincount(index[mask], minlength=runs)
        total += np.bincount(index, minlength=runs)
    return folders.kept(kept), folders.kept(total - kept)


def filter_scores(
    source: str | os.PathLike,
    output: str | os.PathLike,
    *,
    thresh: float,
    rejected: str | os.PathLike | None = None,
) -> FilterCounts:
    """Stream ``source`` and write the rows with ``cp_p_clean >= thresh`` to ``output``.

    Rows below the threshold, and rows with no score, go to ``rejected`` when it is given.
    Both files keep the input's schema and metadata, with the filter recorded in it and the
    image folders of the rows each holds. Memory use is bounded by one batch, whatever the
    file's size.

    Raises
    ------
    InputError
        ``source`` is not a scores file, an output would overwrite it, the two outputs are one
        file, an output name does not end in ``.parquet``, or an output path cannot be written;
        nothing is written.
    """
    if not 0.0 <= thresh <= 1.0:
        raise InputError(f"--thresh must be within [0, 1]; got {thresh}")
    refuse_overwrite(output, [source])
    check_output_path(output)
    if rejected is not None:
        refuse_overwrite(rejected, [source])
        if Path(rejected).resolve() == Path(output).resolve():
            raise InputError("the kept and the rejected output must be different files")
        check_output_path(rejected)
    handle, meta = open_scores(source)
    for name, path in (("output", output), ("--rejected", rejected)):
        if path is not None and Path(path).suffix != ".parquet":
            raise InputError(
                f"filter writes parquet, so its {name} must end in .parquet; got {Path(path).name} "
                "(for a keep-list use `cleanpairs export --format uids`)"
            )
    schema = handle.schema_arrow
    kept_folders, rejected_folders = _split_folders(handle, meta, thresh, source)
    kept_n = rejected_n = 0
    rejected_output = atomic_output(rejected) if rejected is not None else contextlib.nullcontext(None)
    with atomic_output(output) as kept_tmp, rejected_output as rej_tmp:
        kept_writer = pq.ParquetWriter(
            kept_tmp, _tagged_schema(schema, meta, kept_folders, thresh=thresh, side="kept")
        )
        rej_writer = (
            pq.ParquetWriter(
                rej_tmp, _tagged_schema(schema, meta, rejected_folders, thresh=thresh, side="rejected")
            )
            if rej_tmp is not None
            else None
        )
        try:
            for batch in iter_batches(handle):
                mask = keep_mask(batch, thresh)
                kept = batch.filter(mask)
                kept_n += kept.num_rows
                kept_writer.write_batch(kept, row_group_size=ROW_GROUP_ROWS)
                if rej_writer is not None:
                    rest = batch.filter(pc.invert(mask))
                    rej_writer.write_batch(rest, row_group_size=ROW_GROUP_ROWS)
                rejected_n += batch.num_rows - kept.num_rows
        finally:
            kept_writer.close()
            if rej_writer is not None:
                rej_writer.close()
    return FilterCounts(kept=kept_n, rejected=rejected_n)


def read_run_metadata(path: str | os.PathLike) -> RunMetadata:
    """The run metadata of a scores file.

    Raises
    ------
    InputError
        As :func:`open_scores`: ``path`` is not a readable scores file.
    """
    return open_scores(path)[1]


def describe_metadata(meta: RunMetadata) -> str:
    """The run metadata as indented JSON, for people."""
    return json.dumps(meta.__dict__, indent=2, sort_keys=True)
