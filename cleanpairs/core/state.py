"""Per-pair values a method carries across batches, epochs and restarts."""

from __future__ import annotations

import numpy as np


class PairState:
    """Named per-pair arrays (loss, similarity, posterior, soft label, ...) of one corpus.

    Values are written whole or for a batch's pairs, blended as moving averages, and every
    :meth:`update` / :meth:`end_epoch` records the corpus mean of each value, so a method's
    run can be read back epoch by epoch (``history``).

    Parameters
    ----------
    n
        Number of pairs.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.values: dict[str, np.ndarray] = {}
        self.history: dict[str, list[float]] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.values

    def __getitem__(self, name: str) -> np.ndarray:
        return self.values[name]

    def init(self, name: str, fill: float) -> np.ndarray:
        """Start ``name`` at ``fill`` for every pair (unless it exists already); return it."""
        if name not in self.values:
            self.values[name] = np.full(self.n, fill, dtype=np.float32)
        return self.values[name]

    def set(self, name: str, values: np.ndarray, index: np.ndarray | None = None) -> None:
        """Write ``values`` for all pairs, or for the pairs at ``index``."""
        values = np.asarray(values, dtype=np.float32)
        if index is None:
            if values.shape != (self.n,):
                raise ValueError(f"{name} needs one value per pair ({self.n}); got shape {values.shape}")
            self.values[name] = values.copy()
        else:
            self.init(name, np.nan)[np.asarray(index)] = values

    def blend(
        self, name: str, values: np.ndarray, momentum: float, index: np.ndarray | None = None
    ) -> np.ndarray:
        """Moving average ``momentum * old + (1 - momentum) * values``; return the blended values."""
        current = self.init(name, np.nan)
        at = slice(None) if index is None else np.asarray(index)
        old = current[at]
        new = np.asarray(values, dtype=np.float32)
        blended = np.where(np.isnan(old), new, momentum * old + (1 - momentum) * new).astype(np.float32)
        current[at] = blended
        return blended

    def update(self, **values: np.ndarray) -> None:
        """Set several whole arrays and record their means in the history."""
        for name, value in values.items():
            self.set(name, value)
        self.end_epoch(*values)

    def end_epoch(self, *names: str) -> None:
        """Record the current corpus mean of ``names`` (all values when none are named)."""
        for name in names or tuple(self.values):
            self.history.setdefault(name, []).append(float(np.nanmean(self.values[name])))

    def history_summary(self, digits: int = 4) -> dict[str, list[float]]:
        """The recorded means, rounded, for run metadata."""
        return {name: [round(v, digits) for v in means] for name, means in self.history.items()}
