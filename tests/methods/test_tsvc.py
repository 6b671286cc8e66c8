"""TSVC's pieces (mutual-information soft label, the Coordinator's distribution, the consistency
loss, three makes of model) and the method on real photos."""

import math

import numpy as np
import pytest
import torch

from cleanpairs.encoders import embed_corpus
from cleanpairs.io.tables import read_pairs
from cleanpairs.methods import get_method
from cleanpairs.methods.tsvc import (
    UnitNorm,
    build_tripartite,
    distribute,
    mi_soft_label,
    pointwise_mi,
    variation_consistency,
)
from cleanpairs.metrics import detection_metrics
from cleanpairs.pipeline import fit_method
from tests.conftest import flickr_slice, with_shuffled_captions
from tests.methods.test_contract import synthetic_pairs

SMALL = {"batch_size": 64}


def test_pointwise_mi_is_one_when_certain_and_zero_at_chance():
    candidates = 1025
    mi = pointwise_mi(np.array([0.0, math.log(candidates), 2 * math.log(candidates)]), candidates)
    np.testing.assert_allclose(mi, [1.0, 0.0, -1.0], atol=1e-6)


def test_soft_label_falls_when_the_views_disagree():
    agree = np.array([[0.6], [0.6], [0.6]])
    disagree = np.array([[0.9], [0.6], [0.3]])  # same mean information, spread over the views
    assert mi_soft_label(agree, 0.25)[0] == pytest.approx(0.6)
    assert mi_soft_label(disagree, 0.25)[0] < mi_soft_label(agree, 0.25)[0]
    assert mi_soft_label(disagree, 0.0)[0] == pytest.approx(0.6)
    extreme = mi_soft_label(np.array([[1.5, -2.0], [1.5, -2.0], [1.5, -2.0]]), 0.25)
    np.testing.assert_array_equal(extreme, [1.0, 0.0])


def test_the_coordinator_gives_master_and_assistant_different_pairs():
    by_label = np.array([0.9, 0.9, 0.9, 0.1, 0.1, 0.9])
    by_coordinator = np.array([0.9, 0.1, 0.9, 0.9, 0.1, 0.9])
    shares = distribute(by_label, by_coordinator, threshold=0.5)
    np.testing.assert_array_equal(shares.master, [0, 1, 2, 5])
    np.testing.assert_array_equal(shares.assistant, [0, 2, 3, 5])
    np.testing.assert_array_equal(shares.coordinator, [0, 2, 5])


def test_consistency_loss_is_zero_when_the_views_agree_and_positive_when_not():
    scores = torch.randn(8, 8, generator=torch.Generator().manual_seed(0)) / 3
    same_image = torch.zeros(8, 8, dtype=torch.bool)
    assert torch.allclose(variation_consistency(scores, scores, 0.1, same_image), torch.zeros(8), atol=1e-6)
    # Only how similarities vary within the batch matters, not their level.
    shifted = variation_consistency(scores, scores + 0.3, 0.1, same_image)
    assert torch.allclose(shifted, torch.zeros(8), atol=1e-5)
    ours = scores.clone().requires_grad_(True)
    other = torch.randn(8, 8, generator=torch.Generator().manual_seed(1)) / 3
    reference = other.clone().requires_grad_(True)
    loss = variation_consistency(ours, reference, 0.1, same_image)
    assert (loss > 0).all()
    loss.sum().backward()
    assert ours.grad is not None and ours.grad.abs().sum() > 0
    assert reference.grad is None


def test_the_three_models_differ_in_make():
    pairs, _ = synthetic_pairs()
    params = get_method("tsvc").check_params({})
    models = build_tripartite(pairs, params, seed=0, device="cpu")
    coordinator, master, assistant = models
    # Coordinator: MLP heads into a small shared space.
    assert coordinator.image_head.mlp is not None and coordinator.text_head.mlp is not None
    assert coordinator.image_head.shortcut.out_features == params["coordinator_dim"]
    # Master: linear heads into the shared space of the head parameters.
    assert master.image_head.mlp is None and master.image_head.shortcut.out_features == params["dim"]
    # Assistant: images into the caption encoder's own space; captions not projected at all.
    assert assistant.image_head.shortcut.out_features == pairs.texts.shape[1]
    assert isinstance(assistant.text_head, UnitNorm) and not list(assistant.text_head.parameters())
    sizes = {sum(p.numel() for p in m.parameters()) for m in models}
    assert len(sizes) == 3


@pytest.fixture(scope="module")
def noisy_slice(tmp_path_factory, cache_dir):
    import pyarrow.parquet as pq

    table = with_shuffled_captions(flickr_slice(150, offset=300), 0.4, seed=1)
    path = tmp_path_factory.mktemp("tsvc-slice") / "pairs.parquet"
    pq.write_table(table, path)
    embedded = embed_corpus(read_pairs(path), "offline", cache_dir=cache_dir, device="cpu", progress=False)
    return embedded.pairs, np.asarray(table.column("is_clean").to_pylist())[embedded.rows]


def test_tsvc_beats_the_baseline_on_real_photos_and_repeats(noisy_slice):
    pairs, clean = noisy_slice
    baseline = fit_method(pairs, "similarity", SMALL, seed=0, device="cpu")[0]
    ours = fit_method(pairs, "tsvc", SMALL, seed=0, device="cpu")[0]
    base_auroc = detection_metrics(baseline.p_clean, clean)["auroc"]
    auroc = detection_metrics(ours.p_clean, clean)["auroc"]
    soft_auroc = detection_metrics(ours.soft_label, clean)["auroc"]
    assert auroc > base_auroc, (auroc, base_auroc)
    assert soft_auroc > 0.85
    again = fit_method(pairs, "tsvc", SMALL, seed=0, device="cpu")[0]
    for name in ("p_clean", "soft_label", "similarity"):
        assert np.array_equal(getattr(again, name), getattr(ours, name)), name
