"""Detection metrics: how well a clean posterior separates clean from mismatched pairs."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_fscore_support, roc_auc_score

from cleanpairs.errors import ParameterError


def detection_metrics(p_clean: np.ndarray, is_clean: np.ndarray, *, thresh: float = 0.5) -> dict[str, float]:
    """Score a clean posterior against the truth.

    Noisy pairs are the positives of the detection task, so AUROC and AP rank ``1 - p_clean``
    against ``~is_clean``; precision, recall and F1 are those of flagging ``p_clean < thresh``.
    Pairs with a NaN posterior (not scored) are left out.

    Returns
    -------
    dict
        ``auroc``, ``ap``, ``precision``, ``recall``, ``f1``, ``estimated_noise_rate`` (mean of
        ``1 - p_clean``), ``flagged_rate`` (share below ``thresh``), ``true_noise_rate``, ``n``.
    """
    p = np.asarray(p_clean, dtype=np.float64)
    truth = np.asarray(is_clean, dtype=bool)
    if p.shape != truth.shape:
        raise ParameterError(f"p_clean has {p.shape} entries but is_clean has {truth.shape}")
    scored = ~np.isnan(p)
    p, truth = p[scored], truth[scored]
    noisy = ~truth
    flagged = p < thresh
    both = noisy.any() and truth.any()
    precision, recall, f1, _ = precision_recall_fscore_support(
        noisy, flagged, average="binary", zero_division=0
    )
    return {
        "auroc": float(roc_auc_score(noisy, 1 - p)) if both else float("nan"),
        "ap": float(average_precision_score(noisy, 1 - p)) if both else float("nan"),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "estimated_noise_rate": float(np.mean(1 - p)) if len(p) else float("nan"),
        "flagged_rate": float(flagged.mean()) if len(p) else float("nan"),
        "true_noise_rate": float(noisy.mean()) if len(p) else float("nan"),
        "n": len(p),
    }


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    # A zero row stays zero (cosine 0 with everything) instead of turning into NaN.
    return x / np.maximum(norms, np.finfo(x.dtype).tiny)


def retrieval_metrics(
    image_emb: np.ndarray, text_emb: np.ndarray, image_index: np.ndarray, *, block: int = 1024
) -> dict[str, float]:
    """Recall@K of image-to-text and text-to-image retrieval, in percent, as VSE++ and NCR report it.

    Scores are cosine similarities (rows are normalised here). The rank of a query is the number of
    candidates scoring strictly higher than its best true match, so ties count in the query's
    favour, and R@K is the share of queries with rank below K. An image is scored by its best-ranked
    caption; images without any caption are left out of image-to-text. Queries are scored ``block``
    rows at a time, so memory stays O(block * n).

    Parameters
    ----------
    image_emb : numpy.ndarray
        (n_images, d) image embeddings.
    text_emb : numpy.ndarray
        (n_texts, d) caption embeddings in the same space.
    image_index : numpy.ndarray
        (n_texts,) integers: the row of ``image_emb`` each caption belongs to.
    block : int
        Query rows scored at once.

    Returns
    -------
    dict
        ``i2t_r1``, ``i2t_r5``, ``i2t_r10``, ``t2i_r1``, ``t2i_r5``, ``t2i_r10`` in [0, 100] and
        ``rsum``, their sum.
    """
    images, texts = np.asarray(image_emb), np.asarray(text_emb)
    owner = np.asarray(image_index)
    if images.ndim != 2 or texts.ndim != 2:
        raise ParameterError(f"embeddings must be 2-D, got {images.shape} and {texts.shape}")
    if len(images) == 0 or len(texts) == 0:
        raise ParameterError(f"need at least one image and one caption, got {len(images)} and {len(texts)}")
    if images.shape[1] != texts.shape[1]:
        raise ParameterError(f"image_emb has dimension {images.shape[1]} but text_emb {texts.shape[1]}")
    if owner.shape != (len(texts),) or not np.issubdtype(owner.dtype, np.integer):
        raise ParameterError(f"image_index must be {len(texts)} integers, got {owner.dtype} {owner.shape}")
    if owner.min() < 0 or owner.max() >= len(images):
        raise ParameterError(f"image_index must lie within [0, {len(images)})")
    if block < 1:
        raise ParameterError(f"block must be at least 1, got {block}")
    dtype = np.result_type(images.dtype, texts.dtype, np.float32)
    images, texts = images.astype(dtype, copy=False), texts.astype(dtype, copy=False)
    if not (np.isfinite(images).all() and np.isfinite(texts).all()):
        raise ParameterError("embeddings must be finite")
    images, texts = _unit_rows(images), _unit_rows(texts)

    i2t_rank = np.empty(len(images), dtype=np.int64)
    for start in range(0, len(images), block):
        scores = images[start : start + block] @ texts.T
        mine = (owner >= start) & (owner < start + len(scores))
        rows, cols = owner[mine] - start, np.flatnonzero(mine)
        best = np.full(len(scores), -np.inf, dtype=scores.dtype)
        np.maximum.at(best, rows, scores[rows, cols])
        i2t_rank[start : start + len(scores)] = (scores > best[:, None]).sum(axis=1)
    # An image with no caption has no true match to rank.
    i2t_rank = i2t_rank[np.bincount(owner, minlength=len(images)) > 0]

    t2i_rank = np.empty(len(texts), dtype=np.int64)
    for start in range(0, len(texts), block):
        scores = texts[start : start + block] @ images.T
        true = scores[np.arange(len(scores)), owner[start : start + len(scores)]]
        t2i_rank[start : start + len(scores)] = (scores > true[:, None]).sum(axis=1)

    out = {}
    for name, ranks in (("i2t", i2t_rank), ("t2i", t2i_rank)):
        for k in (1, 5, 10):
            out[f"{name}_r{k}"] = float(100.0 * np.mean(ranks < k))
    out["rsum"] = float(sum(out.values()))
    return out


def rematch_metrics(
    rematch_index: np.ndarray,
    rematch_score: np.ndarray,
    pair_image: np.ndarray,
    caption_image: np.ndarray,
    *,
    min_score: float = 0.0,
) -> dict[str, float]:
    """How right the proposed partners are, where the truth is known (injected noise).

    Parameters
    ----------
    rematch_index, rematch_score
        Each pair's proposed caption (a pair index, -1 for none) and its score.
    pair_image
        ``(n,)`` the image id of each pair.
    caption_image
        ``(n,)`` the image id each pair's caption was written for.
    min_score
        Only rematches scoring at least this count (an export's ``--rematch-thresh``).

    Returns
    -------
    dict
        ``accuracy``: the share of rematched pairs whose new caption was written for their
        image; ``coverage``: the share of mismatched pairs that got a rematch; the counts
        ``rematched`` and ``mismatched``.
    """
    index = np.asarray(rematch_index)
    pair_image, caption_image = np.asarray(pair_image), np.asarray(caption_image)
    score = np.asarray(rematch_score, dtype=np.float64)
    if not (index.shape == score.shape == pair_image.shape == caption_image.shape):
        raise ParameterError("rematch_index, rematch_score, pair_image and caption_image must align")
    taken = (index >= 0) & (np.nan_to_num(score, nan=-np.inf) >= min_score)
    mismatched = caption_image != pair_image
    correct = caption_image[index[taken]] == pair_image[taken]
    return {
        "accuracy": float(correct.mean()) if taken.any() else float("nan"),
        "coverage": float((taken & mismatched).sum() / max(mismatched.sum(), 1)),
        "rematched": int(taken.sum()),
        "mismatched": int(mismatched.sum()),
    }
