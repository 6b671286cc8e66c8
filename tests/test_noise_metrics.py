import numpy as np
import pytest

from cleanpairs.errors import ParameterError
from cleanpairs.metrics import detection_metrics
from cleanpairs.noise import inject_noise, parse_noise_specs, shuffle_captions


def test_shuffle_hits_the_rate_and_the_truth_follows_image_ids():
    ids = np.repeat(np.arange(200), 5)
    noise = shuffle_captions(ids, 0.4, seed=1)
    assert noise.noise_rate == pytest.approx(0.4, abs=0.01)
    assert np.array_equal(noise.is_clean, ids[noise.caption_source] == ids)
    assert sorted(noise.caption_source.tolist()) == list(range(1000))


def test_shuffle_is_repeatable_and_seeded():
    ids = np.repeat(np.arange(50), 5)
    a, b = shuffle_captions(ids, 0.2, seed=3), shuffle_captions(ids, 0.2, seed=3)
    c = shuffle_captions(ids, 0.2, seed=4)
    assert np.array_equal(a.caption_source, b.caption_source)
    assert not np.array_equal(a.caption_source, c.caption_source)


def test_shuffle_rejects_a_bad_rate():
    with pytest.raises(ParameterError, match="within \\[0, 1\\]"):
        shuffle_captions(np.arange(10), 1.5)


def test_detection_metrics_perfect_and_reversed():
    truth = np.array([True, True, False, False])
    good = detection_metrics(np.array([0.9, 0.8, 0.1, 0.2]), truth)
    assert good["auroc"] == 1.0 and good["ap"] == 1.0 and good["f1"] == 1.0
    assert good["true_noise_rate"] == 0.5
    assert good["estimated_noise_rate"] == pytest.approx(0.5)
    bad = detection_metrics(np.array([0.1, 0.2, 0.9, 0.8]), truth)
    assert bad["auroc"] == 0.0 and bad["f1"] == 0.0


def test_detection_metrics_skip_unscored_rows():
    m = detection_metrics(np.array([0.9, np.nan, 0.1]), np.array([True, False, False]))
    assert m["n"] == 2 and m["auroc"] == 1.0


def _wrong_per_image(ids: np.ndarray, noise) -> np.ndarray:
    return np.bincount(ids, weights=~noise.is_clean)


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.8])
def test_partial_noise_leaves_every_image_one_own_caption(rate):
    ids = np.repeat(np.arange(300), 5)
    noise = inject_noise("partial", ids, rate, seed=2)
    assert noise.noise_rate == pytest.approx(rate, abs=0.01)
    assert _wrong_per_image(ids, noise).max() <= 4


def test_partial_noise_refuses_a_rate_it_cannot_reach():
    with pytest.raises(ParameterError, match="at most 0.80"):
        inject_noise("partial", np.repeat(np.arange(10), 5), 0.9)


@pytest.mark.parametrize("kind", ["complete", "image"])
def test_complete_noise_moves_whole_caption_sets(kind):
    ids = np.repeat(np.arange(300), 5)
    noise = inject_noise(kind, ids, 0.4, seed=2)
    wrong = _wrong_per_image(ids, noise)
    assert set(np.unique(wrong)) == {0.0, 5.0}
    assert noise.noise_rate == pytest.approx(0.4, abs=0.01)
    # A chosen image's five pairs carry the five captions of one other image.
    chosen = np.flatnonzero(wrong == 5)
    for image in chosen[:20]:
        sources = noise.caption_source[ids == image]
        assert len(set(ids[sources])) == 1 and sorted(sources % 5) == [0, 1, 2, 3, 4]


def test_hard_noise_picks_near_captions_of_other_images():
    rng = np.random.default_rng(0)
    ids = np.repeat(np.arange(100), 5)
    texts = rng.normal(size=(500, 32)).astype(np.float32)
    noise = inject_noise("hard", ids, 0.3, seed=1, texts=texts)
    assert noise.noise_rate == pytest.approx(0.3, abs=0.01)
    unit = texts / np.linalg.norm(texts, axis=1, keepdims=True)
    moved = np.flatnonzero(noise.caption_source != np.arange(500))
    cos_to_new = (unit[moved] * unit[noise.caption_source[moved]]).sum(1)
    random_cos = (unit[moved] * unit[rng.permutation(500)[: len(moved)]]).sum(1)
    assert cos_to_new.mean() > random_cos.mean() + 0.2


def test_hard_noise_needs_the_caption_embeddings():
    with pytest.raises(ParameterError, match="embeddings"):
        inject_noise("hard", np.arange(10), 0.2)


def test_noise_specs_parse_and_reject_bad_ones():
    assert parse_noise_specs(["shuffle:0.2,0.4", "image:0.2"]) == [
        ("shuffle", 0.2),
        ("shuffle", 0.4),
        ("complete", 0.2),
    ]
    bad_specs = [("shuffle", "KIND:RATE"), ("blur:0.2", "unknown noise kind"), ("hard:x", "not a number")]
    for bad, message in bad_specs:
        with pytest.raises(ParameterError, match=message):
            parse_noise_specs([bad])
