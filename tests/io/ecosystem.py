"""Corpora in the ecosystem's layouts, written by the ecosystem's own libraries, for the tests."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import webdataset as wds

from tests.conftest import flickr_slice


def uid_of(key: str) -> str:
    """A DataComp-style uid (32 hex digits) for a key."""
    return hashlib.md5(key.encode()).hexdigest()


def flickr_pairs(n_images: int, offset: int = 0) -> list[dict]:
    """Real Flickr8k pairs as img2dataset would store them: key, jpeg bytes, caption, uid, url."""
    table = flickr_slice(n_images, offset=offset)
    rows = []
    for i, (path, caption) in enumerate(
        zip(table.column("image").to_pylist(), table.column("caption").to_pylist(), strict=True)
    ):
        key = f"{offset:03d}{i:06d}"
        rows.append(
            {
                "key": key,
                "jpg": Path(path).read_bytes(),
                "caption": caption,
                "uid": uid_of(key),
                "url": f"https://example.org/{Path(path).name}",
            }
        )
    return rows


def write_tar_shard(path: Path, rows: list[dict], *, sidecar: bool = True) -> Path:
    """One shard in img2dataset's layout, written with webdataset's ``TarWriter``."""
    with wds.TarWriter(str(path)) as sink:
        for row in rows:
            meta = {"key": row["key"], "uid": row["uid"], "url": row["url"], "caption": row["caption"]}
            sink.write({"__key__": row["key"], "jpg": row["jpg"], "txt": row["caption"], "json": meta})
    if sidecar:
        table = pa.Table.from_pylist(
            [{"key": r["key"], "uid": r["uid"], "url": r["url"], "status": "success"} for r in rows]
        )
        pq.write_table(table, path.with_suffix(".parquet"))
    return path


def img2dataset_parquet(rows: list[dict]) -> pa.Table:
    """The same pairs as img2dataset's parquet output: a ``jpg`` bytes column beside ``url``."""
    return pa.table(
        {
            "key": [r["key"] for r in rows],
            "url": [r["url"] for r in rows],
            "caption": [r["caption"] for r in rows],
            "jpg": pa.array([r["jpg"] for r in rows], pa.binary()),
            "uid": [r["uid"] for r in rows],
        }
    )


def write_clip_retrieval(folder: Path, shard_rows: list[int], dim: int = 8, seed: int = 0) -> np.ndarray:
    """clip-retrieval's output: ``img_emb/``, ``text_emb/`` npy shards aligned with ``metadata/``;
    returns the image embeddings. Captions match their images (text = image + small noise)."""
    rng = np.random.default_rng(seed)
    for sub in ("img_emb", "text_emb", "metadata"):
        (folder / sub).mkdir(parents=True)
    parts, start = [], 0
    for n, rows in enumerate(shard_rows):
        images = rng.normal(size=(rows, dim)).astype(np.float16)
        texts = (images + 0.1 * rng.normal(size=(rows, dim))).astype(np.float16)
        np.save(folder / "img_emb" / f"img_emb_{n}.npy", images)
        np.save(folder / "text_emb" / f"text_emb_{n}.npy", texts)
        keys = [f"s{start + i:05d}" for i in range(rows)]
        meta = pa.table({"image_path": [f"/nowhere/{k}.jpg" for k in keys], "caption": keys, "key": keys})
        pq.write_table(meta, folder / "metadata" / f"metadata_{n}.parquet")
        parts.append(images)
        start += rows
    return np.concatenate(parts).astype(np.float32)
