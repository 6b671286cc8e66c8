"""L2RM: the batch transport that builds the rematch targets, and the method on real photos."""

import numpy as np
import ot
import pytest
import torch

from cleanpairs.methods.l2rm import partial_transport, rematch_targets, symmetric_kl, transport_cost
from cleanpairs.metrics import detection_metrics
from cleanpairs.pipeline import fit_method
from tests.methods.test_on_flickr import noisy_slice  # noqa: F401  (the shared Flickr8k slice fixture)

SMALL = {"batch_size": 64}


def planted_batch(b=20, partners=((0, 3), (5, 9), (11, 2), (17, 14))):
    """A batch whose cheapest entries are the diagonal (the pairs as given) and a few planted
    off-diagonal partners; everything else costs about 1."""
    rng = np.random.default_rng(0)
    scores = rng.uniform(-0.1, 0.1, size=(b, b))
    np.fill_diagonal(scores, 1.0)
    for i, j in partners:
        scores[i, j] = 0.9
    return torch.from_numpy(scores), partners


def test_batch_transport_moves_rho_of_the_mass_and_never_along_the_diagonal():
    scores, partners = planted_batch()
    b, rho = len(scores), 0.2
    forbidden = torch.eye(b, dtype=torch.bool)
    plan = partial_transport(transport_cost(scores), forbidden, rho=rho, reg=0.01).exp()

    assert float(plan[forbidden].sum()) < 1e-12  # the diagonal is the cheapest, yet gets nothing
    assert float(plan.sum()) == pytest.approx(rho, abs=1e-3)
    assert float(plan.sum(dim=1).max()) <= 1 / b + 1e-6 and float(plan.sum(dim=0).max()) <= 1 / b + 1e-6
    moved = {(i, int(plan[i].argmax())) for i in range(b) if plan[i].sum() > 0.5 / b}
    assert moved == set(partners)

    # The exact partial transport (POT) on the same problem agrees on who goes where.
    cost = transport_cost(scores).numpy().copy()
    cost[forbidden.numpy()] = 1e3
    exact = ot.partial.partial_wasserstein(np.full(b, 1 / b), np.full(b, 1 / b), cost, m=rho)
    assert {(int(i), int(j)) for i, j in zip(*np.nonzero(exact > 1e-9), strict=True)} == set(partners)


def test_rematch_targets_are_distributions_that_follow_the_plan():
    scores, partners = planted_batch()
    forbidden = torch.eye(len(scores), dtype=torch.bool)
    y_i2t, y_t2i = rematch_targets(partial_transport(transport_cost(scores), forbidden, rho=0.2, reg=0.01))
    for y in (y_i2t, y_t2i):
        assert torch.allclose(y.sum(dim=1), torch.ones(len(y), dtype=y.dtype))
        assert float(y.min()) > 0  # floored, so the reverse KL stays finite
    for i, j in partners:
        assert float(y_i2t[i, j]) > 0.99 and float(y_t2i[j, i]) > 0.99
    # An image that moved nothing is told that no caption of the batch is its own.
    assert float(y_i2t[1].max() - y_i2t[1].min()) < 1e-6


def test_symmetric_kl_is_zero_only_at_the_model_own_probabilities():
    scores = torch.randn(8, 8, dtype=torch.float64)
    own = (scores / 0.1).softmax(dim=1), (scores.T / 0.1).softmax(dim=1)
    assert float(symmetric_kl(scores, *own, 0.1).abs().max()) < 1e-10
    uniform = torch.full((8, 8), 1 / 8, dtype=torch.float64)
    assert float(symmetric_kl(scores, uniform, uniform, 0.1).min()) > 0


@pytest.fixture(scope="module")
def fitted_l2rm(noisy_slice):  # noqa: F811
    pairs, _ = noisy_slice
    return fit_method(pairs, "l2rm", SMALL, seed=0, device="cpu")[0]


def test_l2rm_beats_the_baseline_on_real_photos(noisy_slice, fitted_l2rm):  # noqa: F811
    pairs, clean = noisy_slice
    baseline = fit_method(pairs, "similarity", SMALL, seed=0, device="cpu")[0]
    ours = detection_metrics(fitted_l2rm.p_clean, clean)["auroc"]
    assert ours > 0.85
    assert ours > detection_metrics(baseline.p_clean, clean)["auroc"], ours
    # The corpus rematch proposes partners among the pairs taken as noisy only.
    proposed = fitted_l2rm.rematch_index >= 0
    assert proposed.any() and np.all(fitted_l2rm.p_clean[proposed] < 0.5)
    assert np.all(fitted_l2rm.p_clean[fitted_l2rm.rematch_index[proposed]] < 0.5)


def test_l2rm_same_seed_same_output(noisy_slice, fitted_l2rm):  # noqa: F811
    pairs, _ = noisy_slice
    again = fit_method(pairs, "l2rm", SMALL, seed=0, device="cpu")[0]
    for name in ("p_clean", "soft_label", "similarity", "rematch_index"):
        assert np.array_equal(getattr(again, name), getattr(fitted_l2rm, name)), name


def test_caption_agreement_lifts_the_split_on_real_photos(noisy_slice, fitted_l2rm):  # noqa: F811
    pairs, clean = noisy_slice
    paper = fit_method(pairs, "l2rm", {**SMALL, "agreement": 0.0}, seed=0, device="cpu")[0]
    ours, theirs = (detection_metrics(s.p_clean, clean)["auroc"] for s in (fitted_l2rm, paper))
    assert ours > theirs + 0.004, (ours, theirs)


def test_a_scorer_saved_before_the_agreement_split_still_scores_as_it_did():
    from dataclasses import replace

    from cleanpairs.core.agreement import AgreementSplit
    from cleanpairs.methods import get_method
    from tests.methods.test_contract import halves

    (fit, _), (held_out, _), _ = halves()
    scorer = get_method("l2rm")(seed=0, device="cpu", epochs=1, warmup_epochs=1, agreement=0.0).fit(fit)
    expected = scorer.score_pairs(held_out).p_clean
    # Before, the split was a map of the loss itself, and the state said nothing of it.
    of_loss = AgreementSplit.plain(scorer.state_.splits["p_clean"].first.negated())
    scorer.state_ = replace(scorer.state_, splits={"p_clean": of_loss}, scalars={})
    assert np.array_equal(scorer.score_pairs(held_out).p_clean, expected)
