"""Nearest captions for each image with faiss, so that nothing downstream is quadratic in N."""

from __future__ import annotations

import faiss
import numpy as np

EXACT_UP_TO = 50_000
"""Below this many items a flat (exact) index is both faster to build and exact."""


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Unit-length float32 rows (zero rows stay zero)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def build_index(
    items: np.ndarray, *, exact_up_to: int = EXACT_UP_TO, use_gpu: bool = False, normalize: bool = True
) -> faiss.Index:
    """An inner-product index (over unit rows when ``normalize``): flat when small, HNSW
    (log-time search) when large."""
    items = normalize_rows(items) if normalize else np.ascontiguousarray(items, dtype=np.float32)
    d = items.shape[1]
    if len(items) <= exact_up_to:
        index = faiss.IndexFlatIP(d)
        if use_gpu and faiss.get_num_gpus() > 0:  # pragma: no cover - CPU-only machines
            index = faiss.index_cpu_to_all_gpus(index)
    else:
        index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 64
    index.add(items)
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
    if isinstance(index, faiss.IndexHNSWFlat):
        index.hnsw.efSearch = max(64, 2 * k)
    queries = normalize_rows(queries) if normalize else np.ascontiguousarray(queries, dtype=np.float32)
    similarity, found = index.search(queries, k)
    return similarity.astype(np.float32), found.astype(np.int64)
