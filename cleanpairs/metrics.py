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
