"""Caption agreement on constructed corpora whose right and wrong captions are known."""

import json

import numpy as np
import pytest

from cleanpairs.core.agreement import AgreementSplit, CaptionAgreement
from cleanpairs.core.mixture import fit_gmm_split
from cleanpairs.metrics import detection_metrics


def caption_sets(n_images: int, per_image: int, dim: int = 32, spread: float = 0.3, seed: int = 0):
    """Captions that paraphrase their image's topic: topic vector plus a little noise."""
    rng = np.random.default_rng(seed)
    topics = rng.normal(size=(n_images, dim))
    image_index = np.repeat(np.arange(n_images), per_image)
    texts = topics[image_index] + spread * rng.normal(size=(len(image_index), dim))
    return texts, image_index, rng


def shuffled(texts, rate, rng):
    """Move a ``rate`` share of the captions among themselves (caption-level noise)."""
    noisy = rng.random(len(texts)) < rate
    moved = np.flatnonzero(noisy)
    texts = texts.copy()
    texts[moved] = texts[rng.permutation(moved)]
    return texts, ~noisy


def test_a_wrong_caption_agrees_less_and_confidence_is_the_weight_of_the_others():
    texts, image_index, rng = caption_sets(200, 5)
    noisy_texts, clean = shuffled(texts, 0.3, rng)
    agreement, confidence = CaptionAgreement(noisy_texts, image_index).measure(np.ones(len(texts)))
    assert detection_metrics(agreement, clean)["auroc"] > 0.9
    assert np.allclose(confidence, 1.0)  # four others of weight 1 each, capped at 1

    weights = np.full(len(texts), 0.1)
    _, confidence = CaptionAgreement(noisy_texts, image_index).measure(weights)
    assert np.allclose(confidence, 0.4)


def test_weightless_others_give_no_confidence_and_one_caption_per_image_changes_nothing():
    texts, image_index, _ = caption_sets(50, 3)
    agreement = CaptionAgreement(texts, image_index)
    weights = np.zeros(len(texts))
    weights[image_index == 0] = 1.0
    _, confidence = agreement.measure(weights)
    assert np.all(confidence[image_index != 0] == 0)

    singles = CaptionAgreement(texts, np.arange(len(texts)))
    cleanness = np.random.default_rng(1).normal(size=len(texts))
    assert np.array_equal(singles.combine(cleanness, np.full(len(texts), 0.5), 1.0), cleanness)
    assert np.array_equal(agreement.combine(cleanness, np.full(len(texts), 0.5), 0.0), cleanness)
    assert np.array_equal(agreement.combine(cleanness, None, 1.0), cleanness)


def noisy_evidence(clean, rng, separation=1.5):
    """A split statistic that separates the sides only roughly (AUROC about 0.85)."""
    return separation * clean + rng.normal(size=len(clean))


def test_agreement_sharpens_a_rough_split_under_shuffled_captions():
    texts, image_index, rng = caption_sets(300, 5)
    noisy_texts, clean = shuffled(texts, 0.4, rng)
    cleanness = noisy_evidence(clean, rng)
    posterior = 1 / (1 + np.exp(-(cleanness - 0.75) * 1.5))
    combined = CaptionAgreement(noisy_texts, image_index).combine(cleanness, posterior, 1.0)
    before = detection_metrics(cleanness, clean)["auroc"]
    after = detection_metrics(combined, clean)["auroc"]
    assert after > before + 0.05, (before, after)


def test_agreement_steps_aside_when_whole_caption_sets_move_together():
    # Complete noise: an image's whole caption set comes from another image, so wrong
    # captions agree with each other as well as right ones do.
    texts, image_index, rng = caption_sets(300, 5)
    moved_images = rng.random(300) < 0.4
    source = np.arange(300)
    cycle = np.flatnonzero(moved_images)
    source[cycle] = np.roll(cycle, 1)
    per_image = texts.reshape(300, 5, -1)[source].reshape(len(texts), -1)
    clean = ~moved_images[image_index]
    cleanness = noisy_evidence(clean, rng)
    posterior = 1 / (1 + np.exp(-(cleanness - 0.75) * 1.5))
    combined = CaptionAgreement(per_image, image_index).combine(cleanness, posterior, 1.0)
    before = detection_metrics(cleanness, clean)["auroc"]
    after = detection_metrics(combined, clean)["auroc"]
    assert after == pytest.approx(before, abs=0.01), (before, after)


def test_split_runs_the_methods_own_mixture_on_the_combined_statistic():
    texts, image_index, rng = caption_sets(100, 5)
    noisy_texts, clean = shuffled(texts, 0.4, rng)
    cleanness = noisy_evidence(clean, rng)
    seen = []

    def mixture(statistic):
        seen.append(statistic)
        return 1 / (1 + np.exp(-statistic))

    agreement = CaptionAgreement(noisy_texts, image_index)
    posterior = agreement.split(cleanness, mixture, 1.0)
    assert len(seen) == 2 and np.array_equal(seen[0], cleanness)
    assert np.array_equal(posterior, mixture(seen[1]))
    seen.clear()
    agreement.split(cleanness, mixture, 0.0)
    assert len(seen) == 1


def gaussian_split(statistic):
    return fit_gmm_split(statistic, seed=0)


@pytest.mark.parametrize("weight", [0.0, 1.0])
def test_a_fitted_split_splits_its_fit_corpus_as_split_does_and_round_trips(weight):
    texts, image_index, rng = caption_sets(100, 5)
    noisy_texts, clean = shuffled(texts, 0.4, rng)
    cleanness = noisy_evidence(clean, rng)
    agreement = CaptionAgreement(noisy_texts, image_index)
    posterior, fitted = agreement.fit_split(cleanness, gaussian_split, weight)
    assert np.array_equal(posterior, agreement.split(cleanness, lambda s: gaussian_split(s)[0], weight))
    assert (fitted.second is None) == (weight == 0)
    settings, arrays = fitted.to_params()
    rebuilt = AgreementSplit.from_params(json.loads(json.dumps(settings)), arrays)
    for split in (fitted, rebuilt):
        assert np.array_equal(split.posterior(cleanness, agreement), posterior)


def test_refit_splits_again_from_a_first_split_fitted_another_way():
    texts, image_index, rng = caption_sets(100, 5)
    noisy_texts, clean = shuffled(texts, 0.4, rng)
    cleanness = noisy_evidence(clean, rng)
    agreement = CaptionAgreement(noisy_texts, image_index)
    first_posterior, first = gaussian_split(cleanness)
    posterior, fitted = agreement.refit(cleanness, first_posterior, first, gaussian_split, 1.0)
    # From the same first split it is fit_split's second half, and the kept split reproduces it.
    assert np.array_equal(posterior, agreement.fit_split(cleanness, gaussian_split, 1.0)[0])
    assert fitted.first is first and np.array_equal(fitted.posterior(cleanness, agreement), posterior)
    assert detection_metrics(posterior, clean)["auroc"] > detection_metrics(first_posterior, clean)["auroc"]
    assert agreement.refit(cleanness, first_posterior, first, gaussian_split, 0.0)[1].second is None


def test_a_fitted_split_scores_new_pairs_by_their_own_image_group_only():
    texts, image_index, rng = caption_sets(200, 5)
    noisy_texts, clean = shuffled(texts, 0.4, rng)
    cleanness = noisy_evidence(clean, rng)
    fit, new = image_index < 100, image_index >= 100
    fit_agreement = CaptionAgreement(noisy_texts[fit], image_index[fit])
    _, fitted = fit_agreement.fit_split(cleanness[fit], gaussian_split, 1.0)
    whole = fitted.posterior(cleanness[new], CaptionAgreement(noisy_texts[new], image_index[new] - 100))
    # The agreement still helps on pairs the split was not fitted on.
    alone = fitted.first.posterior(cleanness[new])
    gain = detection_metrics(whole, clean[new])["auroc"] - detection_metrics(alone, clean[new])["auroc"]
    assert gain > 0.03, gain
    # Scoring the first half of the images on their own changes none of their posteriors.
    part = new & (image_index < 150)
    own = fitted.posterior(cleanness[part], CaptionAgreement(noisy_texts[part], image_index[part] - 100))
    assert np.array_equal(own, whole[: part.sum()])
    with pytest.raises(ValueError, match="pass the pairs' CaptionAgreement"):
        fitted.posterior(cleanness[new])
