import subprocess
import sys

import numpy as np

from cleanpairs.encoders.cache import EmbeddingCache, content_digest
from cleanpairs.io.atomic import _HOST as HOST
from cleanpairs.io.atomic import TMP_TAG


def test_store_then_lookup_in_a_new_instance(tmp_path):
    digests = [content_digest(f"item {i}") for i in range(5)]
    emb = np.random.default_rng(0).random((5, 8), dtype=np.float32)
    EmbeddingCache(tmp_path, "enc", "texts").store(digests[:3], emb[:3])
    EmbeddingCache(tmp_path, "enc", "texts").store(digests[3:4], emb[3:4])
    found, rows = EmbeddingCache(tmp_path, "enc", "texts").lookup(digests)
    assert found.tolist() == [True, True, True, True, False]
    assert np.array_equal(rows, emb[:4])


def test_encoders_and_modalities_do_not_share_entries(tmp_path):
    d = [content_digest("x")]
    EmbeddingCache(tmp_path, "enc-a", "texts").store(d, np.ones((1, 4), np.float32))
    assert not EmbeddingCache(tmp_path, "enc-b", "texts").lookup(d)[0].any()
    assert not EmbeddingCache(tmp_path, "enc-a", "images").lookup(d)[0].any()


def test_a_part_without_its_matrix_is_ignored(tmp_path):
    cache = EmbeddingCache(tmp_path, "enc", "texts")
    cache.store([content_digest("x")], np.ones((1, 4), np.float32))
    next(cache.folder.glob("*.emb.npy")).unlink()
    assert not EmbeddingCache(tmp_path, "enc", "texts").lookup([content_digest("x")])[0].any()


def test_digests_ending_in_zero_bytes_are_found(tmp_path):
    digests = [b"\x01" * 19 + b"\x00", b"\x00" * 20]
    EmbeddingCache(tmp_path, "enc", "images").store(digests, np.eye(2, dtype=np.float32))
    found, rows = EmbeddingCache(tmp_path, "enc", "images").lookup(digests)
    assert found.all() and np.array_equal(rows, np.eye(2))


WRITER = """
import sys, time
from pathlib import Path
import numpy as np
from cleanpairs.encoders.cache import EmbeddingCache, content_digest
from cleanpairs.io.atomic import _HOST as HOST
from cleanpairs.io.atomic import TMP_TAG
root, first, last, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
while not go.exists():
    time.sleep(0.001)
for start in range(first, last, 10):
    items = range(start, min(start + 10, last))
    EmbeddingCache(root, "enc", "images").store(
        [content_digest(f"item {i}") for i in items], np.array([[i, i / 2, -i] for i in items], np.float32)
    )
"""


def test_two_processes_storing_into_one_cache_at_once_lose_and_corrupt_nothing(tmp_path):
    go = tmp_path / "go"
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path / "cache"), first, last, str(go)])
        for first, last in (("0", "600"), ("300", "900"))
    ]
    go.touch()
    digests = [content_digest(f"item {i}") for i in range(900)]
    expected = np.array([[i, i / 2, -i] for i in range(900)], np.float32)
    # Read while they write, merging the parts into an index every 8 new parts: whatever is
    # visible is whole and right.
    while any(w.poll() is None for w in writers):
        found, rows = EmbeddingCache(tmp_path / "cache", "enc", "images", merge_parts=8).lookup(digests)
        if found.any():
            assert np.array_equal(rows, expected[found])
    assert [w.returncode for w in writers] == [0, 0]
    found, rows = EmbeddingCache(tmp_path / "cache", "enc", "images").lookup(digests)
    assert found.all() and np.array_equal(rows, expected)
    # Overlapping stores of the same embeddings wrote the same parts; no temporary is left.
    names = [p.name for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert len([n for n in names if n.startswith("part-")]) == 2 * 90
    assert not [n for n in names if n.startswith(".")]
    found, rows = EmbeddingCache(tmp_path / "cache", "enc", "images", merge_parts=1).lookup(digests)
    assert found.all() and np.array_equal(rows, expected)
    # One index of all 90 parts is left: each merge removed the smaller ones it covered.
    assert len(list((tmp_path / "cache").rglob("index-*.prefix.npy"))) == 1


def test_the_next_store_removes_what_a_killed_writer_left(tmp_path):
    cache = EmbeddingCache(tmp_path, "enc", "texts")
    cache.folder.mkdir(parents=True)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    left = cache.folder / f".part-0.emb.npy.{TMP_TAG}-{HOST}-{int(gone.stdout)}-0123abcd"
    left.write_bytes(b"half a matrix")
    cache.store([content_digest("x")], np.ones((1, 4), np.float32))
    assert not left.exists()
    assert EmbeddingCache(tmp_path, "enc", "texts").lookup([content_digest("x")])[0].all()


def test_keys_sharing_their_first_eight_bytes_are_told_apart(tmp_path):
    # The index places a key by its first 8 bytes; these share them and differ after.
    digests = [b"\x07" * 8 + bytes([i]) * 12 for i in (9, 3, 200, 0)] + [b"\x01" * 20]
    emb = np.arange(5 * 3, dtype=np.float32).reshape(5, 3)
    EmbeddingCache(tmp_path, "enc", "texts").store(digests[:2], emb[:2])
    EmbeddingCache(tmp_path, "enc", "texts").store(digests[2:], emb[2:])
    asked = [digests[2], b"\x07" * 8 + b"\x05" * 12, digests[0], digests[4], digests[3], digests[1]]
    found, rows = EmbeddingCache(tmp_path, "enc", "texts").lookup(asked)
    assert found.tolist() == [True, False, True, True, True, True]
    assert np.array_equal(rows, emb[[2, 0, 4, 3, 1]])

