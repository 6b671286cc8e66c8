"""Exporting the kept pairs of a scores file as parquet shards or webdataset tar shards."""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from cleanpairs.errors import InputError
from cleanpairs.io.atomic import atomic_output, refuse_overwrite
from cleanpairs.io.images import ImageProblem, check_max_pixels, decode_image, read_image_bytes
from cleanpairs.io.scores import iter_batches, keep_mask, open_scores
from cleanpairs.schema import (
    P_CLEAN,
    REMATCH_KEY,
    REMATCH_SCORE,
    ROW_NUMBER_KEY,
    SIMILARITY,
    RunMetadata,
)

EXPORT_FORMATS = ("parquet", "webdataset")
REMATCHED = "cp_rematched"
"""Export column: true where the row's caption was replaced by its rematched partner's."""


@dataclass(frozen=True)
class ExportCounts:
    """What an export wrote."""

    rows: int
    shards: int
    failed: int
    rematched: int = 0


def _kept_rows(source: str | os.PathLike, thresh: float) -> tuple[Iterator[pa.RecordBatch], RunMetadata]:
    handle, meta = open_scores(source)

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in iter_batches(handle):
            kept = batch.filter(keep_mask(batch, thresh))
            if kept.num_rows:
                yield kept

    return batches(), meta


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
) -> tuple[Iterator[pa.RecordBatch], RunMetadata]:
    handle, meta = open_scores(source)
    caption_col = meta.roles.get("caption")
    if caption_col is None:
        raise InputError("a rematched export needs the corpus's caption column")
    captions = _partner_captions(handle, meta, thresh, rematch_thresh)

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in iter_batches(handle):
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

    return batches(), meta


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

    ``parquet`` writes ``part-00000.parquet``, ... with every column of the scores file.
    ``webdataset`` writes img2dataset's layout: ``00000.tar`` holding ``{key}.jpg``,
    ``{key}.txt`` and ``{key}.json`` per sample, with ``00000.parquet`` and
    ``00000_stats.json`` beside each tar; the sample key is img2dataset's shard-and-index
    number and the corpus key is kept as ``source_key``. The folder appears whole or not at all.
    An image that cannot be read, or has more than ``max_image_pixels`` pixels (default:
    Pillow's limit), is left out of the tar and listed as ``failed_to_read`` with the reason.

    Raises
    ------
    InputError
        Unknown format, a bad threshold or shard size, or an output that would overwrite the input.
    """
    if format not in EXPORT_FORMATS:
        raise InputError(f"--format must be one of {', '.join(EXPORT_FORMATS)}; got {format!r}")
    if not 0.0 <= thresh <= 1.0:
        raise InputError(f"--thresh must be within [0, 1]; got {thresh}")
    if shard_rows < 1:
        raise InputError(f"--shard-rows must be at least 1; got {shard_rows}")
    refuse_overwrite(out_dir, [source])
    if Path(out_dir).is_file():
        raise InputError(f"{out_dir} is a file; export writes a folder of shards")
    if rematch and not rematch_thresh >= 0:
        raise InputError(f"--rematch-thresh must be at least 0; got {rematch_thresh}")
    check_max_pixels(max_image_pixels)
    if rematch:
        batches, meta = _kept_and_rematched_rows(source, thresh, rematch_thresh)
    else:
        batches, meta = _kept_rows(source, thresh)
    with atomic_output(out_dir, directory=True) as tmp:
        if format == "parquet":
            counts = _write_parquet_shards(batches, tmp, shard_rows)
        else:
            counts = _write_webdataset_shards(batches, tmp, shard_rows, meta, max_image_pixels)
    return counts


def _write_parquet_shards(batches: Iterator[pa.RecordBatch], folder: Path, shard_rows: int) -> ExportCounts:
    shards = rows = rematched = 0
    for shards, table in enumerate(_rebatch(batches, shard_rows), start=1):
        pq.write_table(table, folder / f"part-{shards - 1:05d}.parquet")
        rows += table.num_rows
        rematched += _rematched_in(table)
    return ExportCounts(rows=rows, shards=shards, failed=0, rematched=rematched)


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


def _image_ref(value: object, base: Path) -> str | bytes | None:
    if isinstance(value, str) and value and not os.path.isabs(value) and "://" not in value:
        return str(base / value)
    return value  # type: ignore[return-value]


def _jsonable(value: object) -> object:
    if isinstance(value, bytes):
        return None
    return value


def _write_webdataset_shards(
    batches: Iterator[pa.RecordBatch],
    folder: Path,
    shard_rows: int,
    meta: RunMetadata,
    max_pixels: int | None,
) -> ExportCounts:
    roles = meta.roles
    image_col, caption_col, key_col = roles.get("image"), roles.get("caption"), roles.get("key")
    if image_col is None or caption_col is None:
        raise InputError("webdataset export needs the image and caption columns of the corpus")
    base = Path(meta.extra.get("image_base", "."))
    shards = rows = failed = rematched = 0
    for shard, table in enumerate(_rebatch(batches, shard_rows)):
        shards += 1
        rematched += _rematched_in(table)
        records = []
        start = time.time()
        with tarfile.open(folder / f"{shard:05d}.tar", "w") as tar:
            for index, row in enumerate(table.to_pylist()):
                sample_key = f"{shard:05d}{index:04d}" if shard_rows <= 10_000 else f"{shard:05d}{index:09d}"
                source_key = row.get(key_col) if key_col != ROW_NUMBER_KEY else None
                record = {
                    "key": sample_key,
                    "source_key": None if source_key is None else str(source_key),
                    "caption": row[caption_col],
                    P_CLEAN: row[P_CLEAN],
                    SIMILARITY: row[SIMILARITY],
                    "status": "success",
                    "error_message": None,
                    "width": None,
                    "height": None,
                }
                try:
                    jpeg, record["width"], record["height"] = _as_jpeg(
                        read_image_bytes(_image_ref(row[image_col], base)), max_pixels
                    )
                except ImageProblem as problem:
                    record["status"], record["error_message"] = "failed_to_read", str(problem)
                    failed += 1
                    records.append(record)
                    continue
                extra = {k: _jsonable(v) for k, v in row.items() if k not in record and k != image_col}
                _add_member(tar, f"{sample_key}.jpg", jpeg)
                _add_member(tar, f"{sample_key}.txt", (row[caption_col] or "").encode())
                _add_member(tar, f"{sample_key}.json", json.dumps({**record, **extra}).encode())
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
    return ExportCounts(rows=rows, shards=shards, failed=failed, rematched=rematched)
