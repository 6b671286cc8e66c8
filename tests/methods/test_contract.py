"""The contract every registered method must pass (cf. scikit-learn's estimator checks)."""

import json

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from cleanpairs.errors import InputError, NotFittedError, ParameterError
from cleanpairs.io.scorers import save_scorer
from cleanpairs.methods import PairEmbeddings, available_methods, get_method, load_scorer

FAST = {
    "similarity": {"epochs": 40, "batch_size": 64},
    "ncr": {"batch_size": 32, "epochs": 4},
    "crcl": {"batch_size": 16, "stages": "2,2,2,6"},
    "l2rm": {"batch_size": 32, "warmup_epochs": 5, "epochs": 6},
    "mscn": {"batch_size": 32, "warmup_epochs": 5, "epochs": 10},
    "rcar": {"batch_size": 32, "warmup_epochs": 5, "epochs": 6},
    "robust": {"batch_size": 32, "ncr_epochs": 4, "crcl_stages": "2,2,2,6"},
    "tsvc": {"batch_size": 32, "warmup_epochs": 2, "epochs": 4},
}


def synthetic_pairs(n_images=60, per_image=3, noise=0.3, seed=0, order=None):
    """Separate image and text spaces linked by a fixed linear map; noisy pairs get random text."""
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(n_images, 32)).astype(np.float32)
    link = rng.normal(size=(32, 24)).astype(np.float32)
    image_index = np.repeat(np.arange(n_images), per_image)
    texts = images[image_index] @ link + 0.3 * rng.normal(size=(len(image_index), 24))
    noisy = rng.random(len(image_index)) < noise
    texts[noisy] = rng.normal(size=(noisy.sum(), 24)) * texts.std()
    if order is not None:
        image_index, texts, noisy = image_index[order], texts[order], noisy[order]
    keys = np.array([f"k{i}" for i in range(len(image_index))])
    return PairEmbeddings(images, texts, image_index, keys), ~noisy


@pytest.fixture(params=available_methods())
def method(request):
    return request.param


def trusted_pairs(n=60):
    """Clean pairs under the same image-text link as ``synthetic_pairs``, for methods that
    learn from a trusted set."""
    pairs, _ = synthetic_pairs(noise=0.0)
    return PairEmbeddings(pairs.images, pairs.texts[:n], pairs.image_index[:n], pairs.keys[:n])


def fitted(method, pairs, seed=0):
    cls = get_method(method)
    trusted = trusted_pairs() if cls.needs_trusted else None
    return cls(seed=seed, device="cpu", **FAST.get(method, {})).fit(pairs, trusted).score()


def test_output_shapes_types_and_ranges(method):
    pairs, _ = synthetic_pairs()
    scores = fitted(method, pairs)
    n = len(pairs)
    for name in ("p_clean", "soft_label", "similarity", "rematch_score"):
        values = getattr(scores, name)
        assert values.shape == (n,) and values.dtype == np.float32, name
    for name in ("p_clean", "soft_label"):
        values = getattr(scores, name)
        assert np.all((values >= 0) & (values <= 1)), name
    assert np.all(np.isfinite(scores.similarity))
    assert scores.rematch_index.shape == (n,)
    assert np.all((scores.rematch_index >= -1) & (scores.rematch_index < n))
    assert np.all(np.isnan(scores.rematch_score[scores.rematch_index < 0]))


def test_scores_follow_the_input_order(method):
    pairs, clean = synthetic_pairs()
    order = np.random.default_rng(5).permutation(len(pairs))
    shuffled, shuffled_clean = synthetic_pairs(order=order)
    assert roc_auc_score(clean, fitted(method, pairs).p_clean) > 0.9
    assert roc_auc_score(shuffled_clean, fitted(method, shuffled).p_clean) > 0.9


def test_same_seed_same_output(method):
    pairs, _ = synthetic_pairs()
    a, b = fitted(method, pairs, seed=3), fitted(method, pairs, seed=3)
    for name in ("p_clean", "soft_label", "similarity", "rematch_index"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


def test_score_before_fit_and_bad_parameters(method):
    cls = get_method(method)
    with pytest.raises(NotFittedError):
        cls().score()
    with pytest.raises(ParameterError, match=f"{method} has no parameter 'no_such_param'"):
        cls.check_params({"no_such_param": 1})
    for name, spec in cls.params.items():
        assert spec.accepts(spec.default), f"default of {name} is outside its own range"


def test_parameter_messages_say_what_is_allowed():
    cls = get_method("similarity")
    with pytest.raises(
        ParameterError,
        match=r"The 'epochs' parameter of similarity must be an int "
        r"in the range \[1, inf\)\. Got '0' instead\.",
    ):
        cls.check_params({"epochs": "0"})
    assert cls.check_params({"lr": "1e-2", "epochs": "3"})["epochs"] == 3
    with pytest.raises(ParameterError, match="must be one of 'auto', 'always', 'never'"):
        cls.check_params({"train_heads": "sometimes"})


def test_unknown_method_lists_the_registered_ones():
    with pytest.raises(ParameterError, match="unknown method 'nope'; available: .*similarity"):
        get_method("nope")


def test_on_epoch_shows_the_heads_after_every_training_epoch(method):
    pairs, _ = synthetic_pairs()
    cls = get_method(method)
    seen = []

    def watch(epoch, heads):
        seen.append((epoch, heads.embed_texts(pairs.texts[:3]).shape))

    trusted = trusted_pairs() if cls.needs_trusted else None
    scores = cls(seed=0, device="cpu", on_epoch=watch, **FAST.get(method, {})).fit(pairs, trusted).score()
    assert [epoch for epoch, _ in seen] == list(range(scores.info["epochs_run"]))
    assert all(shape[0] == 3 for _, shape in seen)


# --- Scoring pairs a scorer was not fit on (issue #15) -------------------------------------------

REFERENCE = 64
"""Negatives kept in a fitted scorer for these tests. The corpora here have fewer pairs than the
default 1024, which would make the kept sample the whole fit corpus; a smaller one measures unseen
pairs against a sample, as on a real corpus."""

# Spearman correlation of score_pairs' p_clean with score()'s on the fit corpus: measured with
# REFERENCE = 64 on halves() with seeds 0-3, the lowest seen was 0.993 for every method but crcl,
# whose refined labels carry a history unseen pairs do not have (0.71-0.78; docs/methods.md).
AGREEMENT = {"crcl": 0.6}
AUROC_AGREEMENT = 0.01

# How far the held-out half's detection AUROC may fall below the fit half's. Measured with
# REFERENCE = 64, seeds 0-3, the largest drops were: similarity 0.001, crcl 0.004, mscn 0.004,
# tsvc 0.006, rcar 0.014, l2rm 0.020, ncr 0.052 (seed 0, the seed used here). On 180 fit pairs
# the heads memorise their fit pairs' clean captions, and ncr's two copies most: its raw loss
# separates the held-out half at 0.90 where it separates the fit half at 0.97. robust follows ncr
# on this caption-level noise and inherits its drop (0.052 at seed 0).
HELD_OUT_MARGIN = {"l2rm": 0.03, "ncr": 0.07, "robust": 0.07}


def halves(seed=0):
    """A noisy synthetic corpus cut in two by image (fit half, held-out half), and clean pairs of
    further images under the same image-text link, as a trusted set."""
    noisy, clean = synthetic_pairs(n_images=180, noise=0.3, seed=seed)
    pure, _ = synthetic_pairs(n_images=180, noise=0.0, seed=seed)

    def part(pairs, images):
        keep = np.isin(pairs.image_index, images)
        texts, owners = pairs.texts[keep], pairs.image_index[keep] - images[0]
        return PairEmbeddings(pairs.images[images], texts, owners, pairs.keys[keep]), clean[keep]

    fit, held_out, trusted = (np.arange(start, start + 60) for start in (0, 60, 120))
    return part(noisy, fit), part(noisy, held_out), part(pure, trusted)[0]


@pytest.fixture(scope="module")
def fitted_scorers():
    """One fitted scorer per method (fit on the first half), made on first use."""
    return {}


@pytest.fixture
def fitted_scorer(method, fitted_scorers, monkeypatch):
    monkeypatch.setattr("cleanpairs.core.reference.REFERENCE_SIZE", REFERENCE)
    if method not in fitted_scorers:
        (fit, _), _, trusted = halves()
        cls = get_method(method)
        scorer = cls(seed=0, device="cpu", **FAST.get(method, {}))
        fitted_scorers[method] = scorer.fit(fit, trusted if cls.needs_trusted else None)
    return fitted_scorers[method]


ARRAYS = ("p_clean", "soft_label", "similarity", "rematch_index", "rematch_score")


def assert_identical(a, b):
    for name in ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), name


def test_scoring_the_fit_corpus_again_agrees_with_the_fit(method, fitted_scorer):
    (fit, clean), _, _ = halves()
    own, again = fitted_scorer.score(), fitted_scorer.score_pairs(fit)
    assert spearmanr(own.p_clean, again.p_clean).statistic >= AGREEMENT.get(method, 0.95)
    auroc = roc_auc_score(clean, own.p_clean)
    assert roc_auc_score(clean, again.p_clean) == pytest.approx(auroc, abs=AUROC_AGREEMENT)
    for name in ("p_clean", "soft_label"):
        values = getattr(again, name)
        assert values.dtype == np.float32 and np.all((values >= 0) & (values <= 1)), name
    assert np.all(again.rematch_index == -1) and np.all(np.isnan(again.rematch_score))
    assert again.heads is None or again.heads.embed_texts(fit.texts[:2]).shape[0] == 2


def test_scoring_unseen_pairs_is_deterministic_and_per_image_group(fitted_scorer):
    _, (held_out, _), _ = halves()
    first = fitted_scorer.score_pairs(held_out)
    assert_identical(first, fitted_scorer.score_pairs(held_out))
    # Half of the images scored on their own: their pairs' scores do not change (up to float
    # rounding of matrix products of another shape).
    part = held_out.image_index < 30
    owners = held_out.image_index[part]
    alone = fitted_scorer.score_pairs(
        PairEmbeddings(held_out.images[:30], held_out.texts[part], owners, held_out.keys[part])
    )
    for name in ("p_clean", "soft_label", "similarity"):
        np.testing.assert_allclose(getattr(alone, name), getattr(first, name)[part], rtol=0, atol=1e-6)


def test_a_saved_scorer_loads_in_a_fresh_object_and_scores_identically(method, fitted_scorer, tmp_path):
    _, (held_out, _), _ = halves()
    manifest, tensors = fitted_scorer.fitted_state()
    json.dumps(manifest)
    rebuilt = get_method(method).from_fitted_state(manifest, tensors, device="cpu")
    assert_identical(rebuilt.score_pairs(held_out), fitted_scorer.score_pairs(held_out))
    loaded = load_scorer(save_scorer(tmp_path / "scorer", manifest, tensors), device="cpu")
    assert type(loaded) is type(fitted_scorer) and loaded is not fitted_scorer
    with pytest.raises(NotFittedError, match="rebuilt from a fitted state and holds no fit corpus"):
        loaded.score()
    assert_identical(loaded.score_pairs(held_out), fitted_scorer.score_pairs(held_out))


def test_held_out_pairs_are_detected_about_as_well_as_the_fit_corpus(method, fitted_scorer):
    (_, fit_clean), (held_out, held_out_clean), _ = halves()
    on_fit = roc_auc_score(fit_clean, fitted_scorer.score().p_clean)
    on_held_out = roc_auc_score(held_out_clean, fitted_scorer.score_pairs(held_out).p_clean)
    assert on_held_out >= on_fit - HELD_OUT_MARGIN.get(method, 0.02), (on_fit, on_held_out)


def test_scoring_pairs_needs_a_fit_and_the_fit_corpus_sizes():
    cls = get_method("similarity")
    pairs, _ = synthetic_pairs()
    with pytest.raises(NotFittedError):
        cls().score_pairs(pairs)
    with pytest.raises(NotFittedError):
        cls().fitted_state()
    scorer = cls(seed=0, device="cpu", epochs=1).fit(pairs)
    wrong = PairEmbeddings(pairs.images[:, :16], pairs.texts, pairs.image_index, pairs.keys)
    with pytest.raises(ParameterError, match="fit on 32-d images and 24-d texts; these pairs have 16-d"):
        scorer.score_pairs(wrong)
    manifest, tensors = scorer.fitted_state()
    with pytest.raises(InputError, match="is a 'similarity' scorer, not 'ncr'"):
        get_method("ncr").from_fitted_state(manifest, tensors)
    with pytest.raises(InputError, match="cannot be rebuilt: lacks 'modules.image.shortcut.weight'"):
        cls.from_fitted_state(manifest, {k: v for k, v in tensors.items() if "image" not in k})
    resized = {**tensors, "modules.text.shortcut.weight": tensors["modules.text.shortcut.weight"][:, :3]}
    with pytest.raises(InputError, match="cannot be rebuilt: size mismatch for shortcut.weight"):
        cls.from_fitted_state(manifest, resized)


def test_an_aligned_encoder_scorer_keeps_only_its_mixture(tmp_path):
    # With an aligned encoder the baseline trains nothing: its fitted state is the mixture alone.
    pairs, _ = synthetic_pairs()
    aligned = PairEmbeddings(pairs.images[:, :24], pairs.texts, pairs.image_index, pairs.keys, aligned=True)
    scorer = get_method("similarity")(seed=0, device="cpu").fit(aligned)
    manifest, tensors = scorer.fitted_state()
    assert manifest["modules"] == {}
    assert set(tensors) == {f"splits.p_clean.first.{k}" for k in ("knots", "levels", "ranks")}
    loaded = load_scorer(save_scorer(tmp_path / "s", manifest, tensors), device="cpu")
    again = loaded.score_pairs(aligned)
    assert again.heads is None
    assert np.array_equal(again.p_clean, scorer.score().p_clean)
    assert np.array_equal(again.similarity, scorer.score().similarity)


def test_ncr_scores_a_corpus_of_one_image_and_three_captions():
    # A tiny webdataset shard: one picture, three captions; NCR's clean selection can be empty.
    from cleanpairs.methods import get_method

    rng = np.random.default_rng(0)
    pairs = PairEmbeddings(rng.normal(size=(1, 8)), rng.normal(size=(3, 8)), np.zeros(3, int), np.arange(3))
    scores = get_method("ncr")(seed=0, device="cpu", epochs=2).fit(pairs).score()
    assert np.isfinite(scores.p_clean).all() and len(scores.p_clean) == 3


def test_fit_runs_on_the_chosen_cpu_threads_and_puts_them_back(method):
    import torch

    from cleanpairs.device import FIT_THREADS

    cls = get_method(method)
    trusted = trusted_pairs() if cls.needs_trusted else None
    before = torch.get_num_threads()
    for threads, expected in ((None, FIT_THREADS), (2, 2)):
        seen: list[int] = []
        watch = lambda *_, seen=seen: seen.append(torch.get_num_threads())  # noqa: E731
        cls(seed=0, device="cpu", threads=threads, on_epoch=watch, **FAST.get(method, {})).fit(
            synthetic_pairs()[0], trusted
        )
        assert seen and set(seen) == {expected}
        assert torch.get_num_threads() == before


def test_calibrating_on_held_out_pairs_carries_the_splits_and_is_saved(method, fitted_scorer, tmp_path):
    _, (held_out, clean), _ = halves()
    first = held_out.image_index < 30
    calibration, unseen = held_out.take(np.flatnonzero(first)), held_out.take(np.flatnonzero(~first))
    manifest, tensors = fitted_scorer.fitted_state()

    def calibrated():
        return get_method(method).from_fitted_state(manifest, tensors, device="cpu").calibrate(calibration)

    scorer = calibrated()
    before, after = fitted_scorer.score_pairs(unseen), scorer.score_pairs(unseen)
    saved, arrays = scorer.fitted_state()
    assert any(split.get("carried") for split in saved["splits"].values())
    loaded = load_scorer(save_scorer(tmp_path / "scorer", saved, arrays), device="cpu")
    assert_identical(loaded.score_pairs(unseen), after)
    assert_identical(calibrated().score_pairs(unseen), after)
    # The carry is monotone: it moves where unseen pairs fall on the fit's posterior, and keeps
    # their ranking up to the agreement that the moved posteriors weigh.
    auroc = roc_auc_score(clean[~first], before.p_clean)
    assert roc_auc_score(clean[~first], after.p_clean) == pytest.approx(auroc, abs=0.03)


def test_the_held_out_separation_measures_unseen_pairs_and_changes_nothing(method, fitted_scorer):
    _, (held_out, _), _ = halves()
    before = fitted_scorer.score_pairs(held_out)
    separation = fitted_scorer.held_out_separation(held_out)
    assert 0.5 <= separation <= 1.0
    assert_identical(fitted_scorer.score_pairs(held_out), before)
    assert fitted_scorer.held_out_separation(held_out) == separation


def test_with_align_every_method_fits_in_the_shared_space_and_keeps_it(method, tmp_path):
    """``align=cca``: the method trains on the corpus mapped into one space; its scorer keeps the
    map, so unseen pairs, a saved scorer and the heads all take encoder embeddings."""
    (fit, clean), (held_out, _), trusted = halves()
    cls = get_method(method)
    scorer = cls(seed=0, device="cpu", align="cca", **FAST.get(method, {}))
    scorer.fit(fit, trusted if cls.needs_trusted else None)
    assert scorer.alignment_ is not None and scorer.get_params()["align"] == "cca"
    own = scorer.score()
    assert roc_auc_score(clean, own.p_clean) > 0.8
    assert own.heads.embed_images(fit.images[:3]).shape[0] == 3
    assert scorer.score_pairs(held_out).heads.embed_texts(held_out.texts[:2]).shape[0] == 2
    manifest, tensors = scorer.fitted_state()
    assert manifest["alignment"] is True
    loaded = load_scorer(save_scorer(tmp_path / "scorer", manifest, tensors), device="cpu")
    assert_identical(loaded.score_pairs(held_out), scorer.score_pairs(held_out))
    plain = cls(seed=0, device="cpu", **FAST.get(method, {}))
    assert plain.fit(fit, trusted if cls.needs_trusted else None).fitted_state()[0]["alignment"] is False


def test_with_align_the_map_comes_from_the_moments_given_not_the_fit_sample():
    from cleanpairs.core.alignment import CorpusAlignment, CrossMoments

    (fit, _), (held_out, _), _ = halves()
    corpus = CrossMoments.of_pairs(fit) + CrossMoments.of_pairs(held_out)
    scorer = get_method("similarity")(seed=0, device="cpu", align="cca").fit(fit, moments=corpus)
    expected = CorpusAlignment.fit(corpus)
    assert np.array_equal(scorer.alignment_.text_map, expected.text_map)
    alone = get_method("similarity")(seed=0, device="cpu", align="cca").fit(fit)
    assert not np.array_equal(alone.alignment_.text_map, expected.text_map)


def test_align_auto_aligns_a_sample_of_a_larger_corpus_only():
    from cleanpairs.core.alignment import CrossMoments

    (fit, _), (held_out, _), _ = halves()
    corpus = CrossMoments.of_pairs(fit) + CrossMoments.of_pairs(held_out)
    whole = get_method("similarity")(seed=0, device="cpu", align="auto").fit(fit)
    assert whole.alignment_ is None
    assert whole.score().info["align"] == {"aligned": False, "why": "fit on the whole corpus"}
    sample = get_method("similarity")(seed=0, device="cpu", align="auto").fit(fit, moments=corpus)
    assert sample.alignment_ is not None and sample.score().info["align"]["aligned"] is True
