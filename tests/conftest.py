"""Shared fixtures: small slices of real Flickr8k photos and tiny corpora the tests draw."""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cleanpairs.encoders.offline import OfflineEncoder
from cleanpairs.noise import shuffle_captions
from cleanpairs.schema import RunMetadata

FLICKR = Path(__file__).resolve().parents[2] / "shared" / "data" / "flickr8k"


def flickr_slice(n_images: int, *, split: str = "train", offset: int = 0) -> pa.Table:
    """The pairs of ``n_images`` photos of a Flickr8k split, image paths made absolute."""
    if not (FLICKR / f"{split}.parquet").exists():
        pytest.fail(f"Flickr8k is expected at {FLICKR} (the shared data beside the repository)")
    table = pq.read_table(FLICKR / f"{split}.parquet")
    ids = list(dict.fromkeys(table.column("image_id").to_pylist()))[offset : offset + n_images]
    keep = np.isin(np.array(table.column("image_id").to_pylist()), ids)
    table = table.filter(pa.array(keep))
    paths = [str(FLICKR / p) for p in table.column("image").to_pylist()]
    return table.set_column(table.schema.get_field_index("image"), "image", pa.array(paths))


def with_shuffled_captions(table: pa.Table, rate: float, seed: int = 0, *, source: bool = False) -> pa.Table:
    """``table`` with a ``rate`` fraction of captions shuffled and the truth in ``is_clean``
    (and, with ``source``, the image each caption was written for in ``caption_image_id``)."""
    ids = np.array(table.column("image_id").to_pylist())
    noise = shuffle_captions(ids, rate, seed=seed)
    captions = np.array(table.column("caption").to_pylist(), dtype=object)[noise.caption_source]
    table = table.set_column(table.schema.get_field_index("caption"), "caption", pa.array(captions.tolist()))
    table = table.append_column("is_clean", pa.array(noise.is_clean))
    if source:
        table = table.append_column("caption_image_id", pa.array(ids[noise.caption_source].tolist()))
    return table


def run_metadata(rows: int, roles: dict[str, str], **fields: object) -> RunMetadata:
    """The metadata of a scores file written by hand in a test (a similarity run on ``rows`` rows)."""
    defaults: dict[str, object] = {
        "version": "0",
        "method": "similarity",
        "params": {},
        "encoder": "offline",
        "seed": 0,
        "input": ["in.parquet"],
        "input_fingerprint": "f",
        "estimated_noise_rate": 0.5,
    }
    return RunMetadata(**{**defaults, **fields, "roles": roles, "rows": rows, "scored_rows": rows})


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One embedding cache for the session, so each photo is encoded once."""
    return tmp_path_factory.mktemp("embedding-cache")


@pytest.fixture(scope="session")
def offline_encoder() -> OfflineEncoder:
    return OfflineEncoder(device="cpu")


@pytest.fixture(scope="session")
def noisy_flickr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 real photos x 5 captions, 30% of captions shuffled, as a parquet file."""
    table = with_shuffled_captions(flickr_slice(60), 0.3, seed=0)
    path = tmp_path_factory.mktemp("flickr") / "noisy.parquet"
    pq.write_table(table, path)
    return path


@pytest.fixture(scope="session")
def small_flickr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 real photos x 5 captions (clean), as a parquet file with absolute image paths."""
    path = tmp_path_factory.mktemp("flickr-small") / "pairs.parquet"
    pq.write_table(flickr_slice(12, offset=100), path)
    return path


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder on a real read-only file system (a tmpfs mounted read-only; root ignores the
    permission bits, not a read-only mount), or one without write permission for other users."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"running as root and cannot mount a read-only tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def write_blank_png(path: Path, width: int, height: int) -> Path:
    """Write a valid one-colour PNG of ``width`` x ``height`` pixels: 1 bit per pixel, streamed
    through zlib row by row, so even 15,000 x 15,000 pixels takes a few kilobytes and no memory."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\0" * (1 + (width + 7) // 8)  # filter byte 0, then the row's bits, all black
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


@contextlib.contextmanager
def read_only_copy(source: Path, where: Path) -> Iterator[Path]:
    """A copy of the folder ``source`` under ``where`` that cannot be written.

    Root ignores permission bits, so as root the copy sits on a tmpfs mounted read-only (the
    way a model is shipped on a read-only volume); other users get the bits cleared.
    """
    where.mkdir(parents=True, exist_ok=True)
    copy = where / source.name
    if os.geteuid() != 0:
        shutil.copytree(source, copy)
        for path in [copy, *copy.rglob("*")]:
            path.chmod(path.stat().st_mode & ~0o222)
        yield copy
        return
    if subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(where)], capture_output=True).returncode != 0:
        pytest.skip("a read-only folder needs `mount` (root with CAP_SYS_ADMIN) or a non-root user")
    try:
        shutil.copytree(source, copy)
        subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True, capture_output=True)
        yield copy
    finally:
        subprocess.run(["umount", str(where)], check=True, capture_output=True)
