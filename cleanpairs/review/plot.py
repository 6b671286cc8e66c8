"""The histogram of ``cp_p_clean`` a review page shows, as an SVG file made with matplotlib."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cleanpairs.review.stats import PLOT_BINS, ScoreStats


def write_histogram(stats: ScoreStats, target: Path) -> None:
    """Draw the ``cp_p_clean`` histogram (clean and noisy stacked where the truth is known) with
    the threshold marked, and save it as SVG at ``target``."""
    import matplotlib

    matplotlib.use("Agg")  # no display; the review is written, never shown
    import matplotlib.pyplot as plt

    edges = np.linspace(0.0, 1.0, PLOT_BINS + 1)
    width = edges[1] - edges[0]
    fig, ax = plt.subplots(figsize=(6.4, 2.8), dpi=100)
    try:
        if stats.with_truth:
            ax.bar(
                edges[:-1],
                stats.hist_clean,
                width=width,
                align="edge",
                color="#4c9a6a",
                edgecolor="white",
                label="clean (truth)",
            )
            ax.bar(
                edges[:-1],
                stats.hist_noisy,
                width=width,
                align="edge",
                bottom=stats.hist_clean,
                color="#d0604f",
                edgecolor="white",
                label="noisy (truth)",
            )
            ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False, fontsize=9)
        else:
            ax.bar(edges[:-1], stats.hist, width=width, align="edge", color="#5878a8", edgecolor="white")
        ax.axvline(stats.thresh, color="#222222", linestyle="--", linewidth=1)
        ax.annotate(
            f"threshold {stats.thresh:g}",
            (stats.thresh, 1),
            xycoords=("data", "axes fraction"),
            xytext=(4, -12),
            textcoords="offset points",
            fontsize=9,
        )
        ax.set_xlim(0, 1)
        ax.set_xlabel("cp_p_clean (low: likely mismatched)")
        ax.set_ylabel("pairs")
        ax.spines[["top", "right"]].set_visible(False)
        fig.tight_layout()
        fig.savefig(target, format="svg", metadata={"Date": None})
    finally:
        plt.close(fig)
