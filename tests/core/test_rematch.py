"""Rematching: faiss candidates, partial transport in blocks, and what it proposes."""

import numpy as np
import pytest

from cleanpairs.core.candidates import nearest_items
from cleanpairs.core.rematch import forbid_own_image, rematch_pairs, transport_block
from cleanpairs.errors import ParameterError
from cleanpairs.metrics import rematch_metrics


def shuffled_corpus(n_images=120, per_image=3, noisy_share=0.3, noise=0.25, seed=0):
    """Images and captions in one space; a share of the captions moved to other pairs.

    Returns the embeddings, each pair's image, the image each caption was written for and
    a p_clean that marks the moved pairs as noisy.
    """
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(n_images, 16)).astype(np.float32)
    image_index = np.repeat(np.arange(n_images), per_image)
    texts = images[image_index] + noise * rng.normal(size=(len(image_index), 16)).astype(np.float32)
    moved = np.flatnonzero(rng.random(len(image_index)) < noisy_share)
    source = np.arange(len(image_index))
    source[moved] = rng.permutation(moved)
    caption_image = image_index[source]
    p_clean = np.where(caption_image == image_index, 0.9, 0.1)
    return images, texts[source], image_index, caption_image, p_clean


def test_partial_transport_keeps_its_marginals_and_moves_the_asked_mass():
    rng = np.random.default_rng(0)
    cost = rng.random((40, 60))
    capacity = np.where(rng.random(60) < 0.2, 0.0, 1.0)
    plan = transport_block(cost, capacity, mass=0.5)
    assert plan.min() >= -1e-12
    assert np.all(plan.sum(axis=1) <= 1 + 1e-9)
    assert np.all(plan.sum(axis=0) <= capacity + 1e-9)
    assert plan.sum() == pytest.approx(20.0)
    assert plan[:, capacity == 0].sum() == pytest.approx(0.0)


def test_partial_transport_moves_what_the_columns_can_take():
    plan = transport_block(np.random.default_rng(1).random((10, 3)), np.ones(3), mass=1.0)
    assert plan.sum() == pytest.approx(3.0)


def test_forbidden_captions_get_no_mass_and_each_caption_is_used_once():
    images, texts, image_index, _, p_clean = shuffled_corpus()
    found = rematch_pairs(images, texts, image_index, p_clean, k=5, mass=1.0, block=16)
    rows = np.flatnonzero(found.index >= 0)
    assert len(rows) > 0
    # Never a caption of the pair's own image, never a caption of a pair taken as clean.
    assert np.all(image_index[found.index[rows]] != image_index[rows])
    assert np.all(p_clean[found.index[rows]] < 0.5)
    assert len(np.unique(found.index[rows])) == len(rows)
    assert np.all(found.index[p_clean >= 0.5] == -1)
    assert np.all(np.isnan(found.score[found.index < 0]))
    assert np.all(found.score[rows] >= 0)


def test_rematching_finds_the_captions_written_for_each_image():
    images, texts, image_index, caption_image, p_clean = shuffled_corpus()
    found = rematch_pairs(images, texts, image_index, p_clean, k=10, mass=1.0)
    result = rematch_metrics(found.index, found.score, image_index, caption_image)
    assert result["accuracy"] > 0.9
    assert result["coverage"] > 0.8
    assert found.info["rematched"] == result["rematched"]
    assert {"k", "mass", "threshold", "block"} <= set(found.info)


def test_the_mass_bounds_how_many_images_are_rematched():
    images, texts, image_index, _, p_clean = shuffled_corpus()
    half = rematch_pairs(images, texts, image_index, p_clean, mass=0.5, block=1000)
    noisy = int((p_clean < 0.5).sum())
    assert (half.index >= 0).sum() == pytest.approx(noisy // 2, abs=1)


def test_blocks_agree_with_one_transport_problem_on_an_easy_corpus():
    images, texts, image_index, caption_image, p_clean = shuffled_corpus(noise=0.05)
    whole = rematch_pairs(images, texts, image_index, p_clean, mass=1.0, block=10_000)
    blocks = rematch_pairs(images, texts, image_index, p_clean, mass=1.0, block=8)
    for found in (whole, blocks):
        assert rematch_metrics(found.index, found.score, image_index, caption_image)["accuracy"] > 0.97


def test_the_margin_score_ranks_right_rematches_first():
    images, texts, image_index, caption_image, p_clean = shuffled_corpus(noise=0.9)
    found = rematch_pairs(images, texts, image_index, p_clean, mass=1.0)
    rows = np.flatnonzero(found.index >= 0)
    right = caption_image[found.index[rows]] == image_index[rows]
    assert 0 < right.mean() < 1
    assert found.score[rows][right].mean() > found.score[rows][~right].mean()


def test_same_input_same_rematch():
    images, texts, image_index, _, p_clean = shuffled_corpus()
    a = rematch_pairs(images, texts, image_index, p_clean)
    b = rematch_pairs(images, texts, image_index, p_clean)
    assert np.array_equal(a.index, b.index)
    assert np.array_equal(a.score, b.score, equal_nan=True)


def test_nothing_to_rematch_below_the_threshold():
    images, texts, image_index, _, _ = shuffled_corpus()
    found = rematch_pairs(images, texts, image_index, np.ones(len(texts)))
    assert np.all(found.index == -1) and found.info["rematched"] == 0


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"k": 0}, "'k'"),
        ({"mass": 0.0}, "'mass'"),
        ({"threshold": 1.5}, "'threshold'"),
        ({"block": 1}, "'block'"),
    ],
)
def test_bad_settings_are_one_clear_sentence(settings, message):
    images, texts, image_index, _, p_clean = shuffled_corpus()
    with pytest.raises(ParameterError, match=message):
        rematch_pairs(images, texts, image_index, p_clean, **settings)


def test_forbid_own_image_blanks_only_the_queries_own_captions():
    candidates = np.array([[0, 1, 2], [2, -1, 0]])
    caption_images = np.array([7, 8, 7])
    out = forbid_own_image(candidates, np.array([7, 8]), caption_images)
    assert out.tolist() == [[-1, 1, -1], [2, -1, 0]]


def test_the_inverted_index_finds_nearly_what_the_exact_one_does():
    rng = np.random.default_rng(0)
    items = rng.normal(size=(3000, 16)).astype(np.float32)
    queries = items[:200] + 0.1 * rng.normal(size=(200, 16)).astype(np.float32)
    _, exact = nearest_items(queries, items, 5)
    _, approx = nearest_items(queries, items, 5, exact_up_to=100)
    overlap = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(exact, approx, strict=True)])
    assert overlap > 0.9
    assert np.all(exact[:, 0] == np.arange(200))
