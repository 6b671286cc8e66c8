"""The on-disk key index of a cache folder: found keys, merges, several processes, read-only."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from cleanpairs.encoders.cache import EmbeddingCache, content_digest
from cleanpairs.io.keyindex import PARTS_SUFFIX, PREFIX_SUFFIX, open_index


def store_parts(root, parts: int, rows: int = 5, first: int = 0) -> tuple[list[bytes], np.ndarray]:
    """``parts`` parts of ``rows`` items each; the items' digests and embeddings (row i is i)."""
    digests = [content_digest(f"item {i}") for i in range(first, first + parts * rows)]
    emb = np.arange(first, first + parts * rows, dtype=np.float32)[:, None] * np.ones(3, np.float32)
    for p in range(parts):
        lo = p * rows
        EmbeddingCache(root, "enc", "texts").store(digests[lo : lo + rows], emb[lo : lo + rows])
    return digests, emb


def indexes(cache: EmbeddingCache) -> list[list[str]]:
    return [json.loads(f.read_text())["parts"] for f in sorted(cache.folder.glob(f"index-*{PARTS_SUFFIX}"))]


def test_parts_past_the_limit_are_merged_into_an_index_on_disk_and_found_through_it(tmp_path):
    digests, emb = store_parts(tmp_path, parts=7)
    cache = EmbeddingCache(tmp_path, "enc", "texts", merge_parts=3)
    asked = [content_digest("absent"), *digests[::-1]]
    found, rows = cache.lookup(asked)
    assert found.tolist() == [False] + [True] * 35 and np.array_equal(rows, emb[::-1])
    assert [len(parts) for parts in indexes(cache)] == [7]
    # Two more parts stay in memory beside the index; three more make a new index of all ten,
    # which replaces the one it covers.
    more, more_emb = store_parts(tmp_path, parts=2, first=35)
    found, rows = EmbeddingCache(tmp_path, "enc", "texts", merge_parts=3).lookup(more + digests)
    assert found.all() and np.array_equal(rows, np.vstack([more_emb, emb]))
    assert [len(parts) for parts in indexes(cache)] == [7]
    last, last_emb = store_parts(tmp_path, parts=1, first=45)
    found, rows = EmbeddingCache(tmp_path, "enc", "texts", merge_parts=3).lookup(digests + more + last)
    assert found.all() and np.array_equal(rows, np.vstack([emb, more_emb, last_emb]))
    assert [len(parts) for parts in indexes(cache)] == [10]


def test_a_merge_a_few_entries_at_a_time_keeps_keys_that_share_a_prefix_apart(tmp_path):
    cache = EmbeddingCache(tmp_path, "enc", "images")
    shared = [b"\x07" * 8 + bytes([i]) * 12 for i in range(6)]
    digests = [content_digest(f"x{i}") for i in range(30)] + shared
    emb = np.arange(len(digests), dtype=np.float32)[:, None] * np.ones(2, np.float32)
    order = np.random.default_rng(0).permutation(len(digests))
    for lo in range(0, len(digests), 4):
        take = order[lo : lo + 4]
        cache.store([digests[i] for i in take], emb[take])
    parts = sorted(cache.folder.glob("part-*.keys.npy"))
    open_index(cache.folder, parts[:4], merge_parts=2, chunk=3)
    [index] = open_index(cache.folder, parts, merge_parts=2, chunk=3)
    assert len(index.parts) == len(parts)
    assert np.all(np.diff(np.asarray(index.prefix).astype(np.float64)) >= 0)
    queries = np.frombuffer(b"".join([*digests, b"\x07" * 8 + b"\x09" * 12]), np.uint8).reshape(-1, 20)
    part, row = index.find(queries)
    assert part[-1] == -1 and (part[:-1] >= 0).all()
    for i, (p, r) in enumerate(zip(part[:-1], row[:-1], strict=True)):
        assert bytes(np.load(index.parts[p])[r]) == digests[i]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a folder this user cannot write")
def test_a_cache_that_cannot_be_written_is_indexed_in_memory(tmp_path):
    digests, emb = store_parts(tmp_path, parts=4)
    cache = EmbeddingCache(tmp_path, "enc", "texts", merge_parts=2)
    cache.folder.chmod(0o555)
    try:
        found, rows = cache.lookup(digests)
    finally:
        cache.folder.chmod(0o755)
    assert found.all() and np.array_equal(rows, emb)
    assert not list(cache.folder.glob(f"index-*{PREFIX_SUFFIX}"))
