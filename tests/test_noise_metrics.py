import numpy as np
import pytest

from cleanpairs.errors import ParameterError
from cleanpairs.metrics import detection_metrics
from cleanpairs.noise import shuffle_captions


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
