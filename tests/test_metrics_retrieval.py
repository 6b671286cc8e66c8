import numpy as np
import pytest

from cleanpairs.errors import ParameterError
from cleanpairs.metrics import retrieval_metrics

KEYS = ["i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum"]


def _angles(*degrees):
    rad = np.deg2rad(degrees)
    return np.column_stack([np.cos(rad), np.sin(rad)])


def _reference(images, texts, owner):
    """Ranks by sorting the full score matrix, for data without ties."""
    images = images / np.linalg.norm(images, axis=1, keepdims=True)
    texts = texts / np.linalg.norm(texts, axis=1, keepdims=True)
    scores = images @ texts.T
    i2t = []
    for i in np.unique(owner):
        order = np.argsort(-scores[i])
        i2t.append(np.flatnonzero(np.isin(order, np.flatnonzero(owner == i))).min())
    t2i = [np.flatnonzero(np.argsort(-scores[:, t]) == owner[t])[0] for t in range(len(texts))]
    out = {}
    for name, ranks in (("i2t", np.array(i2t)), ("t2i", np.array(t2i))):
        for k in (1, 5, 10):
            out[f"{name}_r{k}"] = 100.0 * np.mean(ranks < k)
    out["rsum"] = sum(out.values())
    return out


def test_hand_built_ranks_and_ties():
    # Images along +x, +y, -x, -y, so an image's score for a caption is one of the caption's
    # coordinates, exact in floating point. Image 3 has no caption.
    images = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    texts = np.vstack([[1.0, 1.0], [-1.0, 0.0], _angles(-30, -60), [[0.0, 1.0], [-1.0, 0.0]]])
    owner = np.array([0, 0, 1, 1, 2, 2])
    # i2t ranks: image 0 -> 1 (caption 2 beats its 45° caption), image 1 -> 4, image 2 -> 0 (its
    # caption 5 ties caption 1 at the top); image 3 is skipped.
    # t2i ranks: 0 (ties image 1), 3, 2, 3, 1 (image 0 ties it at 0), 0.
    m = retrieval_metrics(images, texts, owner)
    assert list(m) == KEYS
    assert m["i2t_r1"] == pytest.approx(100 / 3)
    assert m["t2i_r1"] == pytest.approx(100 / 3)
    assert m["i2t_r5"] == m["i2t_r10"] == m["t2i_r5"] == m["t2i_r10"] == 100.0
    assert m["rsum"] == pytest.approx(400 + 200 / 3)


def test_recall_at_five_and_ten():
    # Image 0 owns only the 60° caption, which six captions (0°..50°) beat: rank 6.
    angles = np.arange(0, 120, 10)
    owner = np.where(angles == 60, 0, 1)
    m = retrieval_metrics(np.array([[1.0, 0.0], [-1.0, 0.0]]), _angles(*angles), owner)
    assert (m["i2t_r1"], m["i2t_r5"], m["i2t_r10"]) == (50.0, 50.0, 100.0)
    # Captions of image 1 below 90° prefer image 0; only the 60°, 100° and 110° captions hit.
    assert (m["t2i_r1"], m["t2i_r5"], m["t2i_r10"]) == (25.0, 100.0, 100.0)


def test_perfect_embeddings_score_everything():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(50, 16)).astype(np.float32)
    owner = np.repeat(np.arange(50), 5)
    m = retrieval_metrics(images, 3.0 * images[owner], owner)
    assert all(m[k] == 100.0 for k in KEYS[:-1]) and m["rsum"] == 600.0


def test_random_embeddings_are_near_chance_and_match_a_sorted_reference():
    rng = np.random.default_rng(1)
    images, texts = rng.normal(size=(200, 32)), rng.normal(size=(1000, 32))
    owner = np.repeat(np.arange(200), 5)
    m = retrieval_metrics(images, texts, owner)
    # Chance R@1 is 0.5% for t2i (1 of 200 images) and about 2.5% for i2t (5 of 1000 captions).
    assert m["t2i_r1"] < 5 and m["i2t_r1"] < 10 and m["t2i_r10"] < 15
    ref = _reference(images, texts, owner)
    assert m == pytest.approx(ref)


def test_block_size_does_not_change_the_result():
    rng = np.random.default_rng(2)
    images = rng.normal(size=(60, 8))
    owner = rng.integers(0, 60, size=250)
    texts = images[owner] + rng.normal(scale=1.5, size=(250, 8))
    assert retrieval_metrics(images, texts, owner, block=7) == retrieval_metrics(images, texts, owner)


def test_bad_arguments_raise():
    images, texts, owner = np.eye(3), np.eye(3), np.arange(3)
    with pytest.raises(ParameterError):
        retrieval_metrics(images, np.ones((3, 4)), owner)
    with pytest.raises(ParameterError):
        retrieval_metrics(images, texts, owner[:2])
    with pytest.raises(ParameterError):
        retrieval_metrics(images, texts, np.array([0, 1, 3]))
    with pytest.raises(ParameterError):
        retrieval_metrics(images, texts, owner.astype(float))
    with pytest.raises(ParameterError):
        retrieval_metrics(np.empty((0, 3)), np.empty((0, 3)), np.empty(0, dtype=int))
    with pytest.raises(ParameterError):
        retrieval_metrics(images, texts, owner, block=0)
