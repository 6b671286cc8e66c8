"""Nearest captions for each image with faiss, so that nothing downstream is quadratic in N."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import faiss

EXACT_UP_TO = 20_000
"""Up to this many items a flat (exact) index is both fast enough and exact."""
PROBES = 16
"""Inverted lists searched per query in the approximate index."""


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Unit-length float32 rows (zero rows stay zero)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def build_index(
    items: np.ndarray, *, exact_up_to: int = EXACT_UP_TO, use_gpu: bool = False, normalize: bool = True
) -> faiss.Index:
    """An inner-product index (over unit rows when ``normalize``): flat (exact) when small,
    inverted lists when large.

    The inverted index has about ``4 sqrt(n)`` lists (faiss's rule of thumb), trained on a
    sample of 39 to 64 points per list, so a query scans ``O(sqrt(n))`` items instead of
    ``n``. (HNSW searches faster still, but building it over 200,000 rows took minutes on
    two cores.)"""
    import faiss  # here, not above: faiss is heavy and the rematch settings import this module

    items = normalize_rows(items) if normalize else np.ascontiguousarray(items, dtype=np.float32)
    d = items.shape[1]
    if len(items) <= exact_up_to:
        index = faiss.IndexFlatIP(d)
        if use_gpu and faiss.get_num_gpus() > 0:  # pragma: no cover - CPU-only machines
            index = faiss.index_cpu_to_all_gpus(index)
        index.add(items)
        return index
    # faiss wants at least 39 training points per list.
    lists = max(1, min(int(4 * np.sqrt(len(items))), len(items) // 39))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, lists, faiss.METRIC_INNER_PRODUCT)
    sample = np.random.default_rng(0).choice(len(items), min(len(items), 64 * lists), replace=False)
    index.train(items[np.sort(sample)])
    index.add(items)
    index.nprobe = PROBES
    return index


def nearest_items(
    queries: np.ndarray,
    items: np.ndarray,
    k: int,
    *,
    exact_up_to: int = EXACT_UP_TO,
    use_gpu: bool = False,
    normalize: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` items of highest cosine (inner product when not ``normalize``) to each query.

    Returns
    -------
    similarity, index
        ``(n_queries, k)`` float32 cosines, best first, and int64 item rows; ``-1`` where
        fewer than ``k`` items exist.
    """
    k = int(min(k, len(items)))
    if k == 0 or len(queries) == 0:
        return np.zeros((len(queries), k), np.float32), np.full((len(queries), k), -1, np.int64)
    index = build_index(items, exact_up_to=exact_up_to, use_gpu=use_gpu, normalize=normalize)
    queries = normalize_rows(queries) if normalize else np.ascontiguousarray(queries, dtype=np.float32)
    similarity, found = index.search(queries, k)
    return similarity.astype(np.float32), found.astype(np.int64)
