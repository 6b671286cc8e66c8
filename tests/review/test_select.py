"""Which pairs the review page shows, chosen while streaming: order, counts, memory."""

from __future__ import annotations

import numpy as np
import pytest

from cleanpairs.metrics import detection_metrics
from cleanpairs.review.select import BottomK, Selector
from cleanpairs.review.stats import ScoreStats


def stream(p: np.ndarray, selector: Selector, batch: int, peak: list[int] | None = None) -> None:
    for start in range(0, len(p), batch):
        selector.offer(p[start : start + batch])
        if peak is not None:
            held = [selector._worst._rows, selector._borderline._rows, selector._sample._rows]
            peak.append(max(len(rows) for rows in held))


@pytest.fixture
def scores() -> np.ndarray:
    rng = np.random.default_rng(1)
    p = rng.random(5000).round(3).astype(np.float32)  # as scores are; rounded: ties, the earlier row wins
    p[rng.choice(5000, 70, replace=False)] = np.nan
    return p


def test_bottom_k_keeps_the_smallest_values_earlier_row_first_on_ties():
    top = BottomK(3)
    top.offer(np.array([0, 1, 2]), np.array([0.5, 0.2, 0.2]))
    top.offer(np.array([3, 4, 5]), np.array([0.2, 0.1, np.nan]))
    rows, values, _ = top.result()
    assert rows.tolist() == [4, 1, 2] and values.tolist() == [0.1, 0.2, 0.2]


def test_worst_are_the_lowest_scores_in_order_whatever_the_batches(scores):
    expected = np.argsort(np.where(np.isnan(scores), np.inf, scores), kind="stable")[:200]
    for batch in (1, 97, 5000):
        selector = Selector(thresh=0.5, worst=200, borderline=100, sample=100, unscored=10)
        stream(scores, selector, batch)
        assert selector.result().worst.tolist() == expected.tolist()


def test_borderline_are_the_nearest_the_threshold_ordered_by_score(scores):
    selector = Selector(thresh=0.7, worst=0, borderline=50, sample=0, unscored=0)
    stream(scores, selector, 333)
    near = selector.result().borderline
    distance = np.where(np.isnan(scores), np.inf, np.abs(scores.astype(np.float64) - 0.7))
    assert sorted(near.tolist()) == sorted(np.argsort(distance, kind="stable")[:50].tolist())
    assert np.all(np.diff(scores[near]) >= 0)
    assert np.abs(scores[near] - 0.7).max() <= 0.021


def test_sample_is_of_kept_pairs_repeatable_and_independent_of_the_batches(scores):
    def sample(seed: int, batch: int) -> list[int]:
        selector = Selector(thresh=0.5, worst=0, borderline=0, sample=100, unscored=0, seed=seed)
        stream(scores, selector, batch)
        return selector.result().sample.tolist()

    first = sample(0, 64)
    assert len(first) == len(set(first)) == 100 and first == sorted(first)
    assert np.all(scores[first] >= 0.5)
    assert first == sample(0, 64)
    assert sample(1, 64) != first
    # Spread over the whole stream, not the first kept rows.
    assert max(first) > 4000 and min(first) < 1000


def test_unscored_are_the_first_rows_without_a_score(scores):
    selector = Selector(thresh=0.5, worst=5, borderline=5, sample=5, unscored=10)
    stream(scores, selector, 128)
    assert selector.result().unscored.tolist() == np.flatnonzero(np.isnan(scores))[:10].tolist()


def test_memory_held_is_bounded_by_k_not_by_the_rows(scores):
    peak: list[int] = []
    selector = Selector(thresh=0.5, worst=50, borderline=30, sample=20, unscored=5)
    stream(np.tile(scores, 4), selector, 500, peak)
    assert max(peak) == 50
    assert len(selector.result().rows()) <= 50 + 30 + 20 + 5


def test_small_tables_give_every_row_once():
    selector = Selector(thresh=0.5, worst=200, borderline=100, sample=100, unscored=10)
    selector.offer(np.array([0.9, 0.1, 0.5, np.nan]))
    result = selector.result()
    assert result.worst.tolist() == [1, 2, 0]
    assert result.borderline.tolist() == [1, 2, 0]
    assert result.sample.tolist() == [0, 2]
    assert result.rows().tolist() == [0, 1, 2, 3]


def test_counts_and_detection_match_the_whole_table_metrics(scores):
    rng = np.random.default_rng(2)
    truth = rng.random(len(scores)) < np.nan_to_num(scores, nan=0.5)
    stats = ScoreStats(0.5, with_truth=True)
    for start in range(0, len(scores), 700):
        part = slice(start, start + 700)
        stats.offer(scores[part], ["ok"] * len(scores[part]), truth[part])
    scored = scores[~np.isnan(scores)]
    assert stats.rows == 5000 and stats.scored == len(scored) == 4930
    # As `filter --thresh` counts: float32 scores against the threshold in float32.
    assert stats.kept_at == {t: int((scored >= np.float32(t)).sum()) for t in (0.3, 0.5, 0.7)}
    assert stats.hist.sum() == stats.hist_clean.sum() + stats.hist_noisy.sum() == 4930
    found, expected = stats.detection(), detection_metrics(scores, truth)
    assert found.auroc == pytest.approx(expected["auroc"], abs=1e-3)
    assert found.f1 == pytest.approx(expected["f1"], abs=1e-9)
    assert found.n == expected["n"]
