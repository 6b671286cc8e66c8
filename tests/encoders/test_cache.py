import numpy as np

from cleanpairs.encoders.cache import EmbeddingCache, content_digest


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
