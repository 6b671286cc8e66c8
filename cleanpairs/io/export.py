"""Exporting the kept pairs of a scores file as parquet shards or webdataset tar shards."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

import cleanpairs
from cleanpairs.errors import InputError
from cleanpairs.io.atomic import OWNED_MANIFEST, atomic_output, check_replaceable_folder, refuse_overwrite
from cleanpairs.io.images import ImageProblem, check_max_pixels, decode_image, read_image_bytes
from cleanpairs.io.keeplist import write_keep_list
from cleanpairs.io.scores import iter_batches, keep_mask, open_scores, with_run_metadata
from cleanpairs.io.tables import ImageFolders, image_values
from cleanpairs.schema import (
    P_CLEAN,
    REMATCH_KEY,
    REMATCH_SCORE,
    ROW_NUMBER_KEY,
    SIMILARITY,
    RunMetadata,
)

EXPORT_FORMATS = ("parquet", "webdataset", "uids")
REMATCHED = "cp_rematched"
"""Export column: true where the row's caption was replaced by its rematched partner's."""

MANIFEST = OWNED_MANIFEST
"""Written beside the shards of every export: what was exported from where, and which files it
wrote. A folder holding only a manifest and the files it names is a previous export, which a new
export may replace; any other non-empty folder is refused, so an export never deletes what it
did not write."""
MANIFEST_FORMAT = "cleanpairs-export"

_RUN = "__cp_image_folder"
"""Internal column carried along the exported rows: the image folder run of each row (see
:class:`ImageFolders`); it is dropped before anything is written."""


@dataclass(frozen=True)
class ExportCounts:
    """What an export wrote."""

    rows: int
    shards: int
    failed: int
    rematched: int = 0


def _with_runs(
    handle: pq.ParquetFile, meta: RunMetadata, source: str | os.PathLike
) -> tuple[Iterator[pa.RecordBatch], ImageFolders]:
    """The batches of the scores file, each row tagged with its image folder run."""
    folders = ImageFolders.from_metadata(meta.extra, handle.metadata.num_rows, source)

    def batches() -> Iterator[pa.RecordBatch]:
        offset = 0
        for batch in iter_batches(handle):
            runs = folders.index(offset, batch.num_rows)
            offset += batch.num_rows
            yield batch.append_column(_RUN, pa.array(runs, pa.int32()))

    return batches(), folders


def _kept_rows(
    source: str | os.PathLike, thresh: float
) -> tuple[Iterator[pa.RecordBatch], RunMetadata, ImageFolders]:
    handle, meta = open_scores(source)
    tagged, folders = _with_runs(handle, meta, source)

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in tagged:
            kept = batch.filter(keep_mask(batch, thresh))
            if kept.num_rows:
                yield kept

    return batches(), meta, folders


def rematch_mask(batch: pa.RecordBatch, thresh: float, rematch_thresh: float) -> pa.BooleanArray:
    """Rows not kept whose rematch partner scored at least ``rematch_thresh``."""
    dropped = pc.invert(keep_mask(batch, thresh))
    confident = pc.fill_null(
        pc.greater_equal(batch.column(REMATCH_SCORE), pa.scalar(rematch_thresh, pa.float32())), False
    )
    return pc.and_(pc.and_(dropped, confident), pc.is_valid(batch.column(REMATCH_KEY)))


def _row_keys(batch: pa.RecordBatch, key_col: str, offset: int) -> pa.Array:
    if key_col == ROW_NUMBER_KEY:
        return pa.array(range(offset, offset + batch.num_rows), pa.int64())
    return batch.column(key_col)


def _partner_captions(
    handle: pq.ParquetFile, meta: RunMetadata, thresh: float, rematch_thresh: float
) -> dict:
    """The captions the rematched rows will take, by key: two passes over the file, holding
    only the partners' captions (one per rematched row) in memory."""
    key_col, caption_col = meta.roles.get("key"), meta.roles.get("caption")
    wanted: set = set()
    for batch in iter_batches(handle, columns=[P_CLEAN, REMATCH_KEY, REMATCH_SCORE]):
        wanted.update(
            batch.column(REMATCH_KEY).filter(rematch_mask(batch, thresh, rematch_thresh)).to_pylist()
        )
    captions: dict = {}
    if not wanted:
        return captions
    columns = [caption_col] + ([] if key_col == ROW_NUMBER_KEY else [key_col])
    offset = 0
    for batch in iter_batches(handle, columns=columns):
        keys = _row_keys(batch, key_col, offset)
        offset += batch.num_rows
        hit = pc.is_in(keys, value_set=pa.array(list(wanted), keys.type))
        picked = zip(
            keys.filter(hit).to_pylist(), batch.column(caption_col).filter(hit).to_pylist(), strict=True
        )
        captions.update(picked)
    return captions


def _kept_and_rematched_rows(
    source: str | os.PathLike, thresh: float, rematch_thresh: float
) -> tuple[Iterator[pa.RecordBatch], RunMetadata, ImageFolders]:
    handle, meta = open_scores(source)
    caption_col = meta.roles.get("caption")
    if caption_col is None:
        raise InputError("a rematched export needs the corpus's caption column")
    captions = _partner_captions(handle, meta, thresh, rematch_thresh)
    tagged, folders = _with_runs(handle, meta, source)

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in tagged:
            kept, moved = keep_mask(batch, thresh), rematch_mask(batch, thresh, rematch_thresh)
            partners = [captions.get(k) for k in batch.column(REMATCH_KEY).to_pylist()]
            caption_at = batch.schema.get_field_index(caption_col)
            new_caption = pc.if_else(
                moved, pa.array(partners, batch.column(caption_at).type), batch.column(caption_at)
            )
            batch = batch.set_column(caption_at, caption_col, new_caption)
            batch = batch.append_column(REMATCHED, moved)
            out = batch.filter(pc.or_(kept, moved))
            if out.num_rows:
                yield out

    return batches(), meta, folders


def _rebatch(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """Regroup a stream of batches into tables of exactly ``rows`` rows (the last may be short)."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        while batch.num_rows:
            take = min(rows - count, batch.num_rows)
            pending.append(batch.slice(0, take))
            count += take
            batch = batch.slice(take)
            if count == rows:
                yield pa.Table.from_batches(pending)
                pending, count = [], 0
    if count:
        yield pa.Table.from_batches(pending)


def check_export_target(out_dir: str | os.PathLike) -> None:
    """Raise :class:`InputError` unless ``out_dir`` may take an export: absent, empty, or an
    earlier export holding only its manifest and the files it names (which is replaced whole)."""
    check_replaceable_folder(out_dir, MANIFEST_FORMAT, "export")


def export_scores(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    format: str = "parquet",
    thresh: float = 0.5,
    shard_rows: int = 10_000,
    rematch: bool = False,
    rematch_thresh: float = 0.15,
    max_image_pixels: int | None = None,
) -> ExportCounts:
    """Write the pairs of a scores file with ``cp_p_clean >= thresh`` as shards in ``out_dir``.

    With ``rematch``, the rows below ``thresh`` whose ``cp_rematch_score`` reaches
    ``rematch_thresh`` are written too, with their image and their rematched partner's
    caption; the column ``cp_rematched`` says which rows these are.

    ``parquet`` writes ``part-00000.parquet``, ... with every column of the scores file, image
    paths made absolute so that the export can be scored again from anywhere. ``webdataset``
    writes img2dataset's layout: ``00000.tar`` holding ``{key}.jpg``, ``{key}.txt`` and
    ``{key}.json`` per sample, with ``00000.parquet`` and ``00000_stats.json`` beside each tar;
    the sample key (``__key__``) is the corpus key made a safe file name (:func:`sample_key`),
    the original always kept in the json as ``source_key``. Each row's relative
    image path is read from the folder of the table it came from. An image that cannot be read,
    or has more than ``max_image_pixels`` pixels (default: Pillow's limit), is left out of the
    tar and listed as ``failed_to_read`` with the reason. ``uids`` writes a keep-list file
    instead of a folder (:func:`cleanpairs.io.keeplist.write_keep_list`): DataComp's sorted
    ``.npy`` of 128-bit uids, or a ``.txt`` of keys.

    Every export also writes ``_cleanpairs.json`` (:data:`MANIFEST`): the scores file's run
    metadata, the export's settings, its counts and the files it wrote. The folder appears
    whole or not at all; it may replace an earlier export, never a folder holding anything else.

    Raises
    ------
    InputError
        Unknown format, a bad threshold or shard size, an output that would overwrite the input,
        or an output folder that is not new, empty or an earlier export; nothing is written.
    """
    if format not in EXPORT_FORMATS:
        raise InputError(f"--format must be one of {', '.join(EXPORT_FORMATS)}; got {format!r}")
    if not 0.0 <= thresh <= 1.0:
        raise InputError(f"--thresh must be within [0, 1]; got {thresh}")
    if shard_rows < 1:
        raise InputError(f"--shard-rows must be at least 1; got {shard_rows}")
    if rematch and not rematch_thresh >= 0:
        raise InputError(f"--rematch-thresh must be at least 0; got {rematch_thresh}")
    check_max_pixels(max_image_pixels)
    refuse_overwrite(out_dir, [source])
    if format == "uids":
        if rematch:
            raise InputError("--format uids writes the kept keys only; drop --rematch")
        batches, meta, _ = _kept_rows(source, thresh)
        rows = write_keep_list(batches, meta.roles, out_dir)
        return ExportCounts(rows=rows, shards=1, failed=0)
    check_export_target(out_dir)
    if rematch:
        batches, meta, folders = _kept_and_rematched_rows(source, thresh, rematch_thresh)
    else:
        batches, meta, folders = _kept_rows(source, thresh)
    with atomic_output(out_dir, directory=True) as tmp:
        if format == "parquet":
            counts, files = _write_parquet_shards(batches, tmp, shard_rows, meta, folders)
        else:
            counts, files = _write_webdataset_shards(
                batches, tmp, shard_rows, meta, folders, max_image_pixels
            )
        settings = {
            "export_format": format,
            "threshold": thresh,
            "shard_rows": shard_rows,
            "rematch": rematch,
            "rematch_thresh": rematch_thresh if rematch else None,
        }
        _write_manifest(tmp, source, meta, settings, counts, files)
    return counts


def _write_manifest(
    folder: Path,
    source: str | os.PathLike,
    meta: RunMetadata,
    settings: dict,
    counts: ExportCounts,
    files: list[str],
) -> None:
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": cleanpairs.__version__,
        "source": os.path.abspath(source),
        **settings,
        **dataclasses.asdict(counts),
        "files": files,
        "scores_run": dataclasses.asdict(meta),
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))


def _absolute_images(table: pa.Table, image_col: str | None, folders: ImageFolders) -> pa.Table:
    """``table`` with each relative image path made absolute, so the export reads from anywhere."""
    if image_col is None or image_col not in table.column_names or folders.problem is not None:
        return table
    column = table.column(image_col)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return table
    paths = folders.resolve(column.to_pylist(), table.column(_RUN).to_numpy())
    at = table.schema.get_field_index(image_col)
    return table.set_column(at, table.schema.field(at), pa.array(paths, column.type))


def _shard_metadata(table: pa.Table, meta: RunMetadata, folders: ImageFolders) -> pa.Table:
    """``table`` without the run column, its image paths absolute, its run metadata naming the
    image folders of its rows."""
    table = _absolute_images(table, meta.roles.get("image"), folders)
    runs = table.column(_RUN).to_numpy()
    table = table.drop_columns([_RUN])
    if folders.problem is not None:  # the scores file's folders say nothing reliable: passed on as they are
        return table
    counts = np.bincount(runs, minlength=len(folders.folders))
    shard_meta = dataclasses.replace(meta, extra={**meta.extra, **folders.kept(counts).to_metadata()})
    return table.replace_schema_metadata(with_run_metadata(table.schema, shard_meta).metadata)


def _write_parquet_shards(
    batches: Iterator[pa.RecordBatch], folder: Path, shard_rows: int, meta: RunMetadata, folders: ImageFolders
) -> tuple[ExportCounts, list[str]]:
    shards = rows = rematched = 0
    files = []
    for shards, table in enumerate(_rebatch(batches, shard_rows), start=1):
        name = f"part-{shards - 1:05d}.parquet"
        pq.write_table(_shard_metadata(table, meta, folders), folder / name)
        files.append(name)
        rows += table.num_rows
        rematched += _rematched_in(table)
    return ExportCounts(rows=rows, shards=shards, failed=0, rematched=rematched), files


def _rematched_in(table: pa.Table) -> int:
    if REMATCHED not in table.column_names:
        return 0
    return int(pc.sum(table.column(REMATCHED)).as_py() or 0)


def _as_jpeg(data: bytes, max_pixels: int | None) -> tuple[bytes, int, int]:
    img = decode_image(data, max_pixels=max_pixels)
    with Image.open(io.BytesIO(data)) as probe:
        is_jpeg = probe.format == "JPEG"
    if is_jpeg:
        return data, img.width, img.height
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95)
    return buf.getvalue(), img.width, img.height


def _add_member(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    info.mtime = 0
    tar.addfile(info, io.BytesIO(payload))


def _jsonable(value: object) -> object:
    if isinstance(value, bytes):
        return None
    return value


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def sample_key(key: object, taken: set[str]) -> str:
    """A corpus key as a webdataset sample key: a safe file name without dots (webdataset cuts
    the key at the first dot), unique among ``taken`` (which it joins)."""
    text = str(key)
    safe = _UNSAFE.sub("_", text)[:200] or "_"
    if safe != text or safe in taken:
        digest = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:8]
        safe = f"{safe}_{digest}" if safe != text else safe
        while safe in taken:
            safe = f"{safe}_"
    taken.add(safe)
    return safe


def _write_webdataset_shards(
    batches: Iterator[pa.RecordBatch],
    folder: Path,
    shard_rows: int,
    meta: RunMetadata,
    folders: ImageFolders,
    max_pixels: int | None,
) -> tuple[ExportCounts, list[str]]:
    roles = meta.roles
    image_col, caption_col, key_col = roles.get("image"), roles.get("caption"), roles.get("key")
    if image_col is None or caption_col is None:
        raise InputError("webdataset export needs the image and caption columns of the corpus")
    shards = rows = failed = rematched = 0
    files = []
    taken: set[str] = set()
    for shard, table in enumerate(_rebatch(batches, shard_rows)):
        shards += 1
        rematched += _rematched_in(table)
        records = []
        start = time.time()
        images = folders.resolve(image_values(table.column(image_col)), table.column(_RUN).to_numpy())
        table = table.drop_columns([_RUN])
        with tarfile.open(folder / f"{shard:05d}.tar", "w") as tar:
            for index, (row, image) in enumerate(zip(table.to_pylist(), images, strict=True)):
                if key_col == ROW_NUMBER_KEY:
                    key = sample_key(f"{shard:05d}{index:04d}", taken)
                    source_key = None
                else:
                    source_key = str(row[key_col])
                    key = sample_key(source_key, taken)
                record = {
                    "key": key,
                    "source_key": source_key,
                    "caption": row[caption_col],
                    P_CLEAN: row[P_CLEAN],
                    SIMILARITY: row[SIMILARITY],
                    "status": "success",
                    "error_message": None,
                    "width": None,
                    "height": None,
                }
                try:
                    jpeg, record["width"], record["height"] = _as_jpeg(read_image_bytes(image), max_pixels)
                except ImageProblem as problem:
                    record["status"], record["error_message"] = "failed_to_read", str(problem)
                    failed += 1
                    records.append(record)
                    continue
                extra = {k: _jsonable(v) for k, v in row.items() if k not in record and k != image_col}
                _add_member(tar, f"{key}.jpg", jpeg)
                _add_member(tar, f"{key}.txt", (row[caption_col] or "").encode())
                _add_member(tar, f"{key}.json", json.dumps({**record, **extra}).encode())
                records.append(record)
                rows += 1
        pq.write_table(pa.Table.from_pylist(records), folder / f"{shard:05d}.parquet")
        stats = {
            "count": len(records),
            "successes": sum(r["status"] == "success" for r in records),
            "failed_to_read": sum(r["status"] != "success" for r in records),
            "duration": time.time() - start,
        }
        (folder / f"{shard:05d}_stats.json").write_text(json.dumps(stats))
        files += [f"{shard:05d}.tar", f"{shard:05d}.parquet", f"{shard:05d}_stats.json"]
    return ExportCounts(rows=rows, shards=shards, failed=failed, rematched=rematched), files
