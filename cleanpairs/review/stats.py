"""What a review page says about the whole scores table, counted a batch at a time."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from cleanpairs.review.select import as_float32

KEEP_AT = (0.3, 0.5, 0.7)
"""The thresholds at which the page says how many pairs ``filter --thresh T`` keeps."""

PLOT_BINS = 20
AUROC_BINS = 10_000
"""AUROC is computed from per-class histograms this fine: memory stays flat whatever the rows,
and scores closer than 1e-4 count as ties (half a win), as a rank AUROC counts equal scores."""


@dataclass
class Detection:
    """Detection quality against a truth column (noisy pairs are the positives).

    ``auroc`` ranks ``1 - cp_p_clean``; precision, recall and F1 are those of flagging
    ``cp_p_clean < thresh``. Only scored rows count.
    """

    auroc: float
    precision: float
    recall: float
    f1: float
    true_noise_rate: float
    n: int


@dataclass
class ScoreStats:
    """Counts over every row of a scores table, updated batch by batch with :meth:`offer`.

    Attributes
    ----------
    rows, scored
        Rows seen, and rows with a ``cp_p_clean``.
    statuses
        ``cp_status`` counts.
    kept_at
        Rows ``filter --thresh T`` keeps, for each of :data:`KEEP_AT` and the page's threshold.
    hist, hist_clean, hist_noisy
        ``cp_p_clean`` counts in :data:`PLOT_BINS` equal bins over [0, 1] (the last bin holds 1);
        by the truth too when there is one.
    """

    thresh: float
    with_truth: bool = False
    rows: int = 0
    scored: int = 0
    statuses: Counter = field(default_factory=Counter)
    kept_at: dict[float, int] = field(default_factory=dict)
    hist: np.ndarray = field(default_factory=lambda: np.zeros(PLOT_BINS, np.int64))
    hist_clean: np.ndarray = field(default_factory=lambda: np.zeros(PLOT_BINS, np.int64))
    hist_noisy: np.ndarray = field(default_factory=lambda: np.zeros(PLOT_BINS, np.int64))
    _fine_clean: np.ndarray = field(default_factory=lambda: np.zeros(AUROC_BINS, np.int64))
    _fine_noisy: np.ndarray = field(default_factory=lambda: np.zeros(AUROC_BINS, np.int64))
    _confusion: np.ndarray = field(default_factory=lambda: np.zeros(4, np.int64))

    def offer(self, p_clean: np.ndarray, statuses: list, truth: np.ndarray | None = None) -> None:
        """Count one batch: each row's ``cp_p_clean`` (NaN where not scored), ``cp_status`` and,
        with a truth column, whether it is clean."""
        p = np.asarray(p_clean, np.float64)
        self.rows += len(p)
        self.statuses.update(statuses)
        scored = ~np.isnan(p)
        ps = p[scored]
        self.scored += len(ps)
        for t in sorted({*KEEP_AT, self.thresh}):
            self.kept_at[t] = self.kept_at.get(t, 0) + int(np.count_nonzero(ps >= as_float32(t)))
        self.hist += _bins(ps, PLOT_BINS)
        if truth is None:
            return
        clean = np.asarray(truth, bool)[scored]
        self.hist_clean += _bins(ps[clean], PLOT_BINS)
        self.hist_noisy += _bins(ps[~clean], PLOT_BINS)
        self._fine_clean += _bins(ps[clean], AUROC_BINS)
        self._fine_noisy += _bins(ps[~clean], AUROC_BINS)
        flagged = ps < as_float32(self.thresh)
        noisy = ~clean
        self._confusion += [
            np.count_nonzero(noisy & flagged),  # true positives
            np.count_nonzero(~noisy & flagged),  # false positives
            np.count_nonzero(noisy & ~flagged),  # false negatives
            np.count_nonzero(~noisy & ~flagged),
        ]

    def detection(self) -> Detection | None:
        """Detection quality against the truth, or ``None`` without one."""
        if not self.with_truth:
            return None
        tp, fp, fn, _ = (int(x) for x in self._confusion)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        n_clean, n_noisy = int(self._fine_clean.sum()), int(self._fine_noisy.sum())
        auroc = float("nan")
        if n_clean and n_noisy:
            # P(a noisy pair scores below a clean one) + half the ties, bin by bin.
            clean_above = np.cumsum(self._fine_clean[::-1])[::-1] - self._fine_clean
            wins = (self._fine_noisy * clean_above).sum() + 0.5 * (self._fine_noisy * self._fine_clean).sum()
            auroc = float(wins / (n_clean * n_noisy))
        n = n_clean + n_noisy
        return Detection(auroc, precision, recall, f1, n_noisy / n if n else float("nan"), n)


def _bins(p: np.ndarray, bins: int) -> np.ndarray:
    index = np.clip((p * bins).astype(np.int64), 0, bins - 1)
    return np.bincount(index, minlength=bins)
