"""The contract every registered method must pass (cf. scikit-learn's estimator checks)."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cleanpairs.errors import NotFittedError, ParameterError
from cleanpairs.methods import PairEmbeddings, available_methods, get_method

FAST = {
    "similarity": {"epochs": 40, "batch_size": 64},
    "ncr": {"batch_size": 32, "epochs": 4},
    "crcl": {"batch_size": 16, "stages": "2,2,2,6"},
    "l2rm": {"batch_size": 32, "warmup_epochs": 5, "epochs": 6},
    "mscn": {"batch_size": 32, "warmup_epochs": 5, "epochs": 10},
    "rcar": {"batch_size": 32, "warmup_epochs": 5, "epochs": 6},
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
