"""Scores files: writing them, reading their metadata, and streaming them through a filter."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cleanpairs.errors import InputError, first_line
from cleanpairs.io.atomic import atomic_output, check_output_path, refuse_overwrite
from cleanpairs.io.tables import ImageFolders
from cleanpairs.schema import (
    METADATA_KEY,
    OUTPUT_COLUMNS,
    P_CLEAN,
    ROW_NUMBER_KEY,
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
        The file is missing, a folder, not parquet, or not written by ``cleanpairs score``
        (no ``cleanpairs`` metadata, or metadata that is damaged or lacks fields).
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder; give the scores file `cleanpairs score` wrote")
    if not path.is_file():
        raise InputError(f"no such file: {path}")
    try:
        handle = ScoresFile(path)
    except (pa.ArrowException, OSError) as err:
        reason = first_line(err)
        raise InputError(f"cannot read {path} as parquet: {reason}") from None
    return handle, require_scores_schema(handle.schema_arrow, path)


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
    handle: pq.ParquetFile, meta: RunMetadata, decide: _Decide, where: str | os.PathLike
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
    for batch in iter_batches(handle, columns=decide.columns):
        index = folders.index(offset, batch.num_rows)
        mask = np.asarray(decide(batch, offset).to_numpy(zero_copy_only=False), dtype=bool)
        offset += batch.num_rows
        kept += np.bincount(index[mask], minlength=runs)
        total += np.bincount(index, minlength=runs)
    return folders.kept(kept), folders.kept(total - kept)


_Decide = Callable[[pa.RecordBatch, int], pa.BooleanArray]


def read_keys_file(path: str | os.PathLike, key_type: pa.DataType, option: str) -> pa.Array:
    """The keys listed in ``path`` (one per line, blank lines skipped) as an array of ``key_type``.

    Raises
    ------
    InputError
        The file cannot be read, or a line is not a key of that type.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or type(err).__name__
        raise InputError(f"{option}: cannot read {path}: {reason}") from None
    keys = [line for line in lines if line.strip()]
    if pa.types.is_integer(key_type):
        try:
            return pa.array([int(k) for k in keys], key_type)
        except (ValueError, OverflowError, pa.ArrowInvalid):
            bad = next(k for k in keys if not k.strip().lstrip("-").isdigit())
            raise InputError(f"{option}: {path} lists {bad!r}, but the keys are integers") from None
    return pa.array(keys, key_type)


class _KeyDecision:
    """Kept rows: ``cp_p_clean >= thresh`` or listed in ``keep``, and not listed in ``drop``."""

    def __init__(self, thresh: float, key_col: str, keep: pa.Array | None, drop: pa.Array | None) -> None:
        self.thresh, self.key_col, self.keep, self.drop = thresh, key_col, keep, drop
        by_row = key_col == ROW_NUMBER_KEY or (keep is None and drop is None)
        self.columns = [P_CLEAN] + ([] if by_row else [key_col])

    def keys(self, batch: pa.RecordBatch, offset: int) -> pa.Array:
        if self.key_col == ROW_NUMBER_KEY:
            return pa.array(np.arange(offset, offset + batch.num_rows, dtype=np.int64))
        return batch.column(self.key_col)

    def __call__(self, batch: pa.RecordBatch, offset: int) -> pa.BooleanArray:
        mask = keep_mask(batch, self.thresh)
        if self.keep is None and self.drop is None:
            return mask
        keys = self.keys(batch, offset)
        if self.keep is not None:
            mask = pc.or_(mask, pc.is_in(keys, value_set=self.keep))
        if self.drop is not None:
            mask = pc.and_(mask, pc.invert(pc.is_in(keys, value_set=self.drop)))
        return mask


def _key_decision(
    handle: pq.ParquetFile,
    meta: RunMetadata,
    thresh: float,
    keep_keys: str | os.PathLike | None,
    drop_keys: str | os.PathLike | None,
    source: str | os.PathLike,
) -> _KeyDecision:
    """The filter's decision, with the keys files read and checked against the scores file:
    every listed key must be a row's, and no key may be both kept and dropped."""
    key_col = meta.roles.get("key") or ROW_NUMBER_KEY
    if keep_keys is None and drop_keys is None:
        return _KeyDecision(thresh, key_col, None, None)
    key_type = pa.int64() if key_col == ROW_NUMBER_KEY else handle.schema_arrow.field(key_col).type
    lists = {}
    for option, path in (("--keep-keys", keep_keys), ("--drop-keys", drop_keys)):
        if path is not None:
            lists[option] = pc.unique(read_keys_file(path, key_type, option))
    if len(lists) == 2:
        both = pc.filter(lists["--keep-keys"], pc.is_in(lists["--keep-keys"], value_set=lists["--drop-keys"]))
        if len(both):
            raise InputError(
                f"{len(both)} keys are listed in both --keep-keys and --drop-keys, as {both[0].as_py()!r}"
            )
    decision = _KeyDecision(thresh, key_col, lists.get("--keep-keys"), lists.get("--drop-keys"))
    found = {option: 0 for option in lists}
    offset = 0
    for batch in iter_batches(handle, columns=[] if key_col == ROW_NUMBER_KEY else [key_col]):
        keys = decision.keys(batch, offset)
        offset += batch.num_rows
        for option, listed in lists.items():
            found[option] += int(pc.sum(pc.is_in(keys, value_set=listed)).as_py() or 0)
    for option, listed in lists.items():
        if found[option] < len(listed):
            example = _first_unknown(handle, decision, listed)
            raise InputError(
                f"{option}: {len(listed) - found[option]} of the {len(listed)} keys listed are not keys "
                f"of {source}, as {example!r}"
            )
    return decision


def _first_unknown(handle: pq.ParquetFile, decision: _KeyDecision, listed: pa.Array) -> object:
    """The first key of ``listed`` that no row of the file has (another pass, on the error path)."""
    missing = listed
    offset = 0
    columns = [] if decision.key_col == ROW_NUMBER_KEY else [decision.key_col]
    for batch in iter_batches(handle, columns=columns):
        keys = decision.keys(batch, offset)
        offset += batch.num_rows
        missing = pc.filter(missing, pc.invert(pc.is_in(missing, value_set=keys)))
    return missing[0].as_py()


def filter_scores(
    source: str | os.PathLike,
    output: str | os.PathLike,
    *,
    thresh: float,
    rejected: str | os.PathLike | None = None,
    keep_keys: str | os.PathLike | None = None,
    drop_keys: str | os.PathLike | None = None,
) -> FilterCounts:
    """Stream ``source`` and write the rows with ``cp_p_clean >= thresh`` to ``output``.

    ``keep_keys`` and ``drop_keys`` are text files of keys, one per line (a review page's
    downloads): the rows they list are kept, or dropped, whatever their score.

    Rows below the threshold, and rows with no score, go to ``rejected`` when it is given.
    Both files keep the input's schema and metadata, with the filter recorded in it and the
    image folders of the rows each holds. Memory use is bounded by one batch, whatever the
    file's size.

    Raises
    ------
    InputError
        ``source`` is not a scores file, an output would overwrite it, the two outputs are one
        file, an output name does not end in ``.parquet``, an output path cannot be written, a
        keys file lists a key the scores file lacks or a key both kept and dropped; nothing is
        written.
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
    decide = _key_decision(handle, meta, thresh, keep_keys, drop_keys, source)
    kept_folders, rejected_folders = _split_folders(handle, meta, decide, source)
    listed = {name: str(path) for name, path in (("keep_keys", keep_keys), ("drop_keys", drop_keys)) if path}
    kept_n = rejected_n = 0
    rejected_output = atomic_output(rejected) if rejected is not None else contextlib.nullcontext(None)
    with atomic_output(output) as kept_tmp, rejected_output as rej_tmp:
        kept_writer = pq.ParquetWriter(
            kept_tmp, _tagged_schema(schema, meta, kept_folders, thresh=thresh, side="kept", **listed)
        )
        rej_writer = (
            pq.ParquetWriter(
                rej_tmp,
                _tagged_schema(schema, meta, rejected_folders, thresh=thresh, side="rejected", **listed),
            )
            if rej_tmp is not None
            else None
        )
        try:
            offset = 0
            for batch in iter_batches(handle):
                mask = decide(batch, offset)
                offset += batch.num_rows
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
