"""Scores files: writing them, reading their metadata, and streaming them through a filter."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cleanpairs.errors import InputError, first_line
from cleanpairs.io.atomic import atomic_output, refuse_overwrite
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


class ScoresFile(pq.ParquetFile):
    """A parquet file open for streaming that remembers its path, for the messages of
    :func:`iter_batches` when a batch turns out damaged."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.path = path


def open_scores(path: str | os.PathLike) -> tuple[ScoresFile, RunMetadata]:
    """Open a scores file for streaming and return it with its run metadata.

    Raises
    ------
    InputError
        The file is missing, not parquet, or not written by ``cleanpairs score``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such file: {path}")
    try:
        handle = ScoresFile(path)
        schema = handle.schema_arrow
    except (pa.ArrowException, OSError) as err:
        raise InputError(f"cannot read {path} as parquet: {first_line(err)}") from None
    except UnicodeDecodeError:
        raise InputError(f"cannot read {path} as parquet: its column names are not UTF-8 text") from None
    return handle, require_scores_schema(schema)


def iter_batches(handle: pq.ParquetFile, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    """Stream a parquet file a bounded batch at a time, so memory stays flat as files grow.

    Raises
    ------
    InputError
        A batch cannot be read: the file is damaged past its footer.
    """
    name = handle.path if isinstance(handle, ScoresFile) else "the scores file"
    batches = handle.iter_batches(batch_size=STREAM_BATCH_ROWS, columns=columns)
    while True:
        try:
            batch = next(batches, None)
            if batch is None:
                return
            # The parquet reader does not check that text is UTF-8; damaged text would
            # otherwise fail later, in whatever reads a status or a key.
            batch.validate(full=True)
        except (pa.ArrowException, OSError) as err:
            raise InputError(f"cannot read {name}: {first_line(err)}") from None
        yield batch


def keep_mask(batch: pa.RecordBatch, thresh: float) -> pa.BooleanArray:
    """Rows with ``cp_p_clean >= thresh``; rows with no score are not kept."""
    return pc.fill_null(pc.greater_equal(batch.column(P_CLEAN), pa.scalar(thresh, pa.float32())), False)


@dataclass(frozen=True)
class FilterCounts:
    """How many rows a filter kept and rejected."""

    kept: int
    rejected: int


def _tagged_schema(schema: pa.Schema, meta: RunMetadata, **filter_info: object) -> pa.Schema:
    extra = dict(meta.extra)
    extra["filter"] = filter_info
    tagged = RunMetadata(**{**meta.__dict__, "extra": extra})
    return with_run_metadata(schema, tagged)


def filter_scores(
    source: str | os.PathLike,
    output: str | os.PathLike,
    *,
    thresh: float,
    rejected: str | os.PathLike | None = None,
) -> FilterCounts:
    """Stream ``source`` and write the rows with ``cp_p_clean >= thresh`` to ``output``.

    Rows below the threshold, and rows with no score, go to ``rejected`` when it is given.
    Both files keep the input's schema and metadata, with the filter recorded in it. Memory
    use is bounded by one batch, whatever the file's size.

    Raises
    ------
    InputError
        ``source`` is not a scores file, or an output would overwrite it.
    """
    if not 0.0 <= thresh <= 1.0:
        raise InputError(f"--thresh must be within [0, 1]; got {thresh}")
    refuse_overwrite(output, [source])
    if rejected is not None:
        refuse_overwrite(rejected, [source])
        if Path(rejected).resolve() == Path(output).resolve():
            raise InputError("the kept and the rejected output must be different files")
    handle, meta = open_scores(source)
    schema = handle.schema_arrow
    kept_n = rejected_n = 0
    rejected_output = atomic_output(rejected) if rejected is not None else contextlib.nullcontext(None)
    with atomic_output(output) as kept_tmp, rejected_output as rej_tmp:
        kept_writer = pq.ParquetWriter(kept_tmp, _tagged_schema(schema, meta, thresh=thresh, side="kept"))
        rej_writer = (
            pq.ParquetWriter(rej_tmp, _tagged_schema(schema, meta, thresh=thresh, side="rejected"))
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
    """The run metadata of a scores file."""
    return open_scores(path)[1]


def describe_metadata(meta: RunMetadata) -> str:
    """The run metadata as indented JSON, for people."""
    return json.dumps(meta.__dict__, indent=2, sort_keys=True)
