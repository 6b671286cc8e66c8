"""Choosing the pairs a review page shows, in one streaming pass with bounded memory.

Each selector sees the scores a batch at a time and keeps only its ``k`` best rows so far
(their global row numbers and ranking values), so a scores folder of any size costs memory in
proportion to ``k``, never to the corpus.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def as_float32(thresh: float) -> float:
    """``thresh`` rounded to float32, as ``filter`` compares it with the float32 ``cp_p_clean``:
    a row the page counts as kept is one ``filter --thresh`` keeps."""
    return float(np.float32(thresh))


class BottomK:
    """The ``k`` rows with the smallest ranking values seen so far (ties: the earlier row), each
    with a payload value carried along (the row's score, where the ranking value is not).

    Parameters
    ----------
    k
        How many rows to keep; 0 keeps none.
    """

    def __init__(self, k: int) -> None:
        self.k = int(k)
        self._rows = np.empty(0, np.int64)
        self._values = np.empty(0, np.float64)
        self._payload = np.empty(0, np.float64)

    def offer(self, rows: np.ndarray, values: np.ndarray, payload: np.ndarray | None = None) -> None:
        """Consider ``rows`` (global row numbers) ranked by ``values``; NaN values are ignored."""
        if self.k <= 0 or len(rows) == 0:
            return
        values = np.asarray(values, np.float64)
        payload = values if payload is None else np.asarray(payload, np.float64)
        ok = ~np.isnan(values)
        rows = np.concatenate([self._rows, np.asarray(rows, np.int64)[ok]])
        values = np.concatenate([self._values, values[ok]])
        payload = np.concatenate([self._payload, payload[ok]])
        if len(rows) > self.k:
            # Sort by (value, row) and keep the first k: ties go to the earlier row, as a stable
            # sort of the whole stream would decide.
            order = np.lexsort((rows, values))[: self.k]
            rows, values, payload = rows[order], values[order], payload[order]
        self._rows, self._values, self._payload = rows, values, payload

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The kept rows, their values and payloads, smallest value first (ties: earlier row)."""
        order = np.lexsort((self._rows, self._values))
        return self._rows[order], self._values[order], self._payload[order]


class FirstK:
    """The first ``k`` rows offered (in stream order)."""

    def __init__(self, k: int) -> None:
        self.k = int(k)
        self._rows: list[np.ndarray] = []
        self._count = 0

    def offer(self, rows: np.ndarray) -> None:
        """Consider ``rows``; only the first ``k`` of the whole stream are kept."""
        take = min(self.k - self._count, len(rows))
        if take > 0:
            self._rows.append(np.asarray(rows[:take], np.int64))
            self._count += take

    def result(self) -> np.ndarray:
        """The kept rows in stream order."""
        return np.concatenate(self._rows) if self._rows else np.empty(0, np.int64)


@dataclass
class Selection:
    """The rows a review page shows, by global row number (across the shards, in name order).

    Attributes
    ----------
    worst
        The rows most likely mismatched: lowest ``cp_p_clean`` first.
    borderline
        The rows nearest the threshold, in order of ``cp_p_clean``.
    sample
        A uniform random sample of the kept rows (``cp_p_clean >= thresh``), in row order.
    unscored
        The first rows with no score (their ``cp_status`` says why), in row order.
    """

    worst: np.ndarray
    borderline: np.ndarray
    sample: np.ndarray
    unscored: np.ndarray

    def rows(self) -> np.ndarray:
        """Every selected row once, in row order."""
        return np.unique(np.concatenate([self.worst, self.borderline, self.sample, self.unscored]))


class Selector:
    """Stream ``cp_p_clean`` batches and pick the rows of a review page.

    Parameters
    ----------
    thresh
        The filter threshold: rows at or above it are kept.
    worst, borderline, sample, unscored
        How many rows each part of the page shows at most.
    seed
        Seed of the random sample: same input and seed, same sample.
    """

    def __init__(
        self, *, thresh: float, worst: int, borderline: int, sample: int, unscored: int, seed: int = 0
    ) -> None:
        self.thresh = float(thresh)
        self._worst = BottomK(worst)
        self._borderline = BottomK(borderline)
        self._sample = BottomK(sample)
        self._unscored = FirstK(unscored)
        self._rng = np.random.default_rng(seed)
        self._seen = 0

    def offer(self, p_clean: np.ndarray) -> None:
        """Consider the next batch of rows (their ``cp_p_clean``, NaN where not scored)."""
        p = np.asarray(p_clean, np.float64)
        rows = np.arange(self._seen, self._seen + len(p), dtype=np.int64)
        self._seen += len(p)
        scored = ~np.isnan(p)
        self._worst.offer(rows, p)
        self._borderline.offer(rows, np.abs(p - self.thresh), p)
        # A bottom-k of uniform random priorities is a uniform sample without replacement (a
        # reservoir); drawing one priority per row keeps it independent of the batch sizes.
        priority = self._rng.random(len(p))
        kept = scored & (p >= as_float32(self.thresh))
        self._sample.offer(rows[kept], priority[kept])
        self._unscored.offer(rows[~scored])

    def result(self) -> Selection:
        """The rows chosen so far."""
        near, _, p = self._borderline.result()
        near = near[np.lexsort((near, p))]
        return Selection(
            worst=self._worst.result()[0],
            borderline=near,
            sample=np.sort(self._sample.result()[0]),
            unscored=self._unscored.result(),
        )
