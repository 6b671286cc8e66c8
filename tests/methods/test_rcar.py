"""RCAR: its pieces do what the paper says, and it finds mismatched captions better than the plain
similarity: shuffled captions among real photos, and whole caption sets swapped between images
(complete noise).

Complete noise is tested on the synthetic corpus of the contract test: on a 150-photo slice no
trainer can tell a swapped set of five consistent captions from a true one (rcar and similarity
both scored AUROC ~0.5 there); on the full Flickr8k train set rcar does (docs/methods.md)."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from cleanpairs.core.training import HeadConfig, HeadTrainer
from cleanpairs.encoders import embed_corpus
from cleanpairs.io.tables import read_pairs
from cleanpairs.methods import PairEmbeddings
from cleanpairs.methods.rcar import (
    MultiTask,
    neighbourhood_loss,
    noise_posterior,
    predict_correspondence,
    refurbish,
    training_pairs,
)
from cleanpairs.metrics import detection_metrics
from cleanpairs.noise import inject_noise
from cleanpairs.pipeline import fit_method
from tests.conftest import flickr_slice
from tests.methods.test_contract import synthetic_pairs

# The slice of tests/methods/test_on_flickr.py (150 train photos), smaller batches for small data.
SMALL = {"batch_size": 64}
AUROC_FLOOR = 0.85
PARAMS = {"temperature": 0.1, "task_weight": 1.0, "neighbour_temperature": 0.05}


def test_refurbished_label_moves_from_the_given_label_to_the_prediction_as_the_noise_posterior_grows():
    prediction = np.full(5, 0.1, dtype=np.float32)
    noise = np.array([0.0, 0.25, 0.5, 0.75, 1.0], dtype=np.float32)
    labels = refurbish(noise, prediction)
    assert labels[0] == pytest.approx(1.0) and labels[-1] == pytest.approx(0.1)
    assert np.all(np.diff(labels) < 0)
    np.testing.assert_allclose(labels, 1 - noise + noise * 0.1, rtol=1e-6)


def test_an_epoch_trains_the_pairs_the_mixture_calls_clean_unless_told_to_train_every_pair():
    noise = np.array([0.1, 0.9, 0.4, 0.6, 0.02])
    assert np.array_equal(training_pairs(noise, False, minimum=2), [0, 2, 4])
    assert training_pairs(noise, True, minimum=2) is None
    # A split that calls nearly everything noisy still leaves the cleanest pairs to learn from.
    assert np.array_equal(training_pairs(np.array([0.9, 0.7, 0.99, 0.8]), False, minimum=2), [1, 3])


def test_the_noise_component_is_the_high_loss_one_and_predictions_fall_with_the_loss():
    rng = np.random.default_rng(0)
    losses = np.concatenate([rng.normal(1.0, 0.2, 300), rng.normal(5.0, 0.5, 200)])
    noise = noise_posterior(losses)
    assert noise[:300].mean() < 0.05 and noise[300:].mean() > 0.95
    prediction = predict_correspondence(losses)
    assert np.all(np.diff(prediction[np.argsort(losses)]) <= 0)
    assert prediction.min() > 0 and prediction.max() <= 1


def test_the_neighbourhood_task_is_zero_when_the_heads_keep_the_neighbours_and_grows_when_they_do_not():
    rng = np.random.default_rng(1)
    points = torch.from_numpy(rng.normal(size=(16, 8)).astype(np.float32))
    frozen = torch.nn.functional.normalize(points, dim=1)
    kept = neighbourhood_loss(frozen, frozen, 0.1, 0.1)
    assert torch.allclose(kept, torch.zeros(16), atol=1e-5)
    scrambled = frozen[torch.randperm(16, generator=torch.Generator().manual_seed(0))]
    assert neighbourhood_loss(scrambled, frozen, 0.1, 0.1).mean() > 0.5


def test_each_task_of_the_multi_task_loss_sends_gradient_to_both_heads():
    pairs, _ = synthetic_pairs()
    model = HeadTrainer(pairs, HeadConfig(hidden=0, batch_size=32), seed=0, device="cpu")
    tasks = MultiTask(model, PARAMS)
    batch = model.batch(torch.arange(32))
    labels = np.linspace(0, 1, len(pairs)).astype(np.float32)
    for name, value in (("matching", tasks.loss(labels)(batch)), ("intra-modal", tasks.intra_modal(batch))):
        assert value.shape == (32,) and torch.isfinite(value).all(), name
        model.optimizer.zero_grad()
        value.mean().backward(retain_graph=True)
        for head in (model.image_head, model.text_head):
            assert head.shortcut.weight.grad.abs().sum() > 0, name


def _embed(table, path, cache_dir):
    pq.write_table(table, path)
    embedded = embed_corpus(read_pairs(path), "offline", cache_dir=cache_dir, device="cpu", progress=False)
    return embedded.pairs, np.asarray(table.column("is_clean").to_pylist())[embedded.rows]


def _with_noise(table, kind, rate, seed=1):
    """``table`` with ``kind`` noise injected into its captions and the truth in ``is_clean``."""
    ids = np.array(table.column("image_id").to_pylist())
    noise = inject_noise(kind, ids, rate, seed=seed)
    captions = np.array(table.column("caption").to_pylist(), dtype=object)[noise.caption_source]
    table = table.set_column(table.schema.get_field_index("caption"), "caption", pa.array(captions.tolist()))
    return table.append_column("is_clean", pa.array(noise.is_clean))


@pytest.fixture(scope="module")
def noisy_slice(tmp_path_factory, cache_dir):
    table = _with_noise(flickr_slice(150, offset=300), "shuffle", 0.4)
    return _embed(table, tmp_path_factory.mktemp("rcar-slice") / "pairs.parquet", cache_dir)


def test_it_finds_mismatched_captions_better_than_the_similarity(noisy_slice):
    pairs, clean = noisy_slice
    scores = fit_method(pairs, "rcar", SMALL, seed=0, device="cpu")[0]
    baseline = fit_method(pairs, "similarity", SMALL, seed=0, device="cpu")[0]
    ours = detection_metrics(scores.p_clean, clean)["auroc"]
    theirs = detection_metrics(baseline.p_clean, clean)["auroc"]
    assert ours > AUROC_FLOOR and ours > theirs, (ours, theirs)
    assert detection_metrics(scores.soft_label, clean)["auroc"] > AUROC_FLOOR
    assert scores.info["epochs_run"] == 6
    again = fit_method(pairs, "rcar", SMALL, seed=0, device="cpu")[0]
    for name in ("p_clean", "soft_label", "similarity"):
        assert np.array_equal(getattr(again, name), getattr(scores, name)), name


def test_under_complete_noise_it_finds_the_swapped_caption_sets():
    pairs, _ = synthetic_pairs(n_images=200, per_image=5, noise=0.0)
    noise = inject_noise("complete", pairs.image_index, 0.4, seed=0)
    noisy = PairEmbeddings(pairs.images, pairs.texts[noise.caption_source], pairs.image_index, pairs.keys)
    ours = fit_method(noisy, "rcar", SMALL, seed=0, device="cpu")[0].p_clean
    theirs = fit_method(noisy, "similarity", SMALL, seed=0, device="cpu")[0].p_clean
    ours_auroc = detection_metrics(ours, noise.is_clean)["auroc"]
    theirs_auroc = detection_metrics(theirs, noise.is_clean)["auroc"]
    assert ours_auroc > 0.99 and ours_auroc > theirs_auroc, (ours_auroc, theirs_auroc)
