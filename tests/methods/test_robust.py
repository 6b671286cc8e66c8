"""robust: its criterion tells noise shared by whole images from noise of single captions, and the
combination follows crcl under the first and ncr under the second."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cleanpairs.core.agreement import image_share
from cleanpairs.errors import ParameterError
from cleanpairs.methods import PairEmbeddings, get_method
from cleanpairs.methods.robust import (
    combine,
    crcl_weight,
    image_coefficient,
    log_odds,
    others_mean,
    with_image_term,
)
from cleanpairs.noise import inject_noise
from tests.methods.test_contract import synthetic_pairs

FAST = {"batch_size": 32, "ncr_epochs": 4, "crcl_stages": "2,2,2,6"}


def test_log_odds_keep_the_order_and_stay_finite_at_zero_and_one():
    odds = log_odds(np.array([0.0, 0.2, 0.5, 0.9, 1.0], dtype=np.float32))
    assert np.all(np.isfinite(odds)) and np.all(np.diff(odds) > 0) and odds[2] == 0


def test_others_mean_is_over_the_image_s_other_captions_and_the_own_value_when_alone():
    values = np.array([1.0, 2.0, 6.0, 5.0])
    assert np.allclose(others_mean(values, np.array([0, 0, 0, 1])), [4.0, 3.5, 1.5, 5.0])


def test_centring_within_images_removes_a_level_shared_by_an_image_s_captions():
    rng = np.random.default_rng(0)
    image_index = np.repeat(np.arange(300), 5)
    clean = rng.random(1500) > 0.2
    level = rng.normal(size=300)[image_index]  # how well the image's captions match at all
    cleanness = clean + level
    before = roc_auc_score(clean, cleanness)
    after = roc_auc_score(clean, with_image_term(cleanness, image_index, -0.5))
    assert after > before + 0.05, (before, after)


def test_siblings_are_evidence_where_whole_images_are_wrong():
    rng = np.random.default_rng(0)
    image_index = np.repeat(np.arange(300), 5)
    clean = (rng.random(300) > 0.4)[image_index]
    cleanness = clean + rng.normal(size=1500)
    before = roc_auc_score(clean, cleanness)
    after = roc_auc_score(clean, with_image_term(cleanness, image_index, 0.5))
    assert after > before + 0.05, (before, after)


def test_the_image_term_adds_siblings_for_image_level_noise_and_takes_some_away_otherwise():
    assert image_coefficient(1.0, 0.5, 0.1) == 0.5
    assert image_coefficient(0.0, 0.5, 0.1) == -0.1
    assert image_coefficient(0.5, 0.5, 0.1) == pytest.approx(0.2)


def test_image_share_is_near_one_for_image_level_cleanness_and_near_zero_for_caption_level():
    rng = np.random.default_rng(0)
    image_index = np.repeat(np.arange(400), 5)
    per_image = rng.random(400) < 0.4
    shared = per_image[image_index] + 0.1 * rng.normal(size=2000)
    single = (rng.random(2000) < 0.4) + 0.1 * rng.normal(size=2000)
    assert image_share(shared, image_index) > 0.9
    assert abs(image_share(single, image_index)) < 0.05


def test_image_share_is_unknown_with_one_caption_per_image_and_then_the_weight_is_ncr_s():
    assert image_share(np.arange(5.0), np.arange(5)) is None
    assert crcl_weight(None, 0.5, 0.7) == 0.0


def test_the_weight_rises_linearly_from_low_to_high_share():
    assert [crcl_weight(s, 0.5, 0.7) for s in (0.1, 0.5, 0.6, 0.7, 0.95)] == pytest.approx([0, 0, 0.5, 1, 1])
    assert np.allclose(combine(np.array([0.2]), np.array([0.8]), 0.25), [0.35])


def test_share_bounds_in_the_wrong_order_are_refused():
    with pytest.raises(ParameterError, match="'share_high' parameter of robust must be at least"):
        get_method("robust").check_params({"share_low": 0.8, "share_high": 0.6})
    with pytest.raises(ParameterError, match="'batch_size' parameter of robust must be 0"):
        get_method("robust").check_params({"batch_size": 1})


def noisy_corpus(kind):
    pairs, _ = synthetic_pairs(n_images=120, per_image=5, noise=0.0)
    noise = inject_noise(kind, pairs.image_index, 0.4, seed=0)
    noisy = PairEmbeddings(pairs.images, pairs.texts[noise.caption_source], pairs.image_index, pairs.keys)
    return noisy, noise.is_clean


@pytest.mark.parametrize("kind, follows", [("complete", "crcl"), ("shuffle", "ncr")])
def test_it_follows_crcl_when_whole_images_are_wrong_and_ncr_when_single_captions_are(kind, follows):
    pairs, clean = noisy_corpus(kind)
    # Without the image term, the combined posterior ranks as the followed component's.
    quick = {**FAST, "image_pooling": 0.0, "image_centring": 0.0}
    scorer = get_method("robust")(seed=0, device="cpu", **quick).fit(pairs)
    scores = scorer.score()
    weight = scores.info["crcl_weight"]
    assert weight == (1.0 if follows == "crcl" else 0.0), scores.info
    followed = scorer.components_[follows].score().p_clean
    assert roc_auc_score(clean, scores.p_clean) == pytest.approx(roc_auc_score(clean, followed), abs=1e-9)


def test_a_sharded_run_saves_a_calibrated_robust_scorer_that_gives_the_run_s_scores_again(tmp_path):
    import pyarrow as pa

    from cleanpairs.sharded import fit_sample_rows, score_shards
    from tests.test_sharded import CP, OPTIONS, _column, noisy_shards

    shards = noisy_shards(tmp_path / "in")
    quick = {"ncr_epochs": 2, "crcl_stages": "1", "batch_size": 32}
    score_shards(shards, tmp_path / "out", method="robust", fit_pairs=100, params=quick,
                 save_scorer_to=tmp_path / "scorer", **OPTIONS)  # fmt: skip
    applied = score_shards(shards, tmp_path / "applied", scorer=tmp_path / "scorer", **OPTIONS)
    assert not applied.fitted and applied.method == "robust"
    # Every pair outside the fit sample gets the run's scores from the saved (calibrated) scorer:
    # both score it among every caption of its image in the shard, those of the fit sample too.
    unseen = pa.array(np.setdiff1d(np.arange(240), fit_sample_rows([60] * 4, 100, seed=0)))
    for name in CP:
        run, again = (_column(tmp_path / folder, name) for folder in ("out", "applied"))
        assert run.take(unseen).equals(again.take(unseen)), name
