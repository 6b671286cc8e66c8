"""The batch losses: values checked by hand on tiny score matrices, and their robustness claims."""

import pytest
import torch

from cleanpairs.core.losses import (
    active_complementary,
    complementary_log,
    hinge_triplet,
    info_nce,
    matching_probabilities,
    soft_info_nce,
)

SCORES = torch.tensor([[0.9, 0.5, 0.1], [0.6, 0.7, 0.2], [0.3, 0.8, 0.4]])


def test_hinge_hardest_and_mean_negatives_by_hand():
    # Pair 0: captions 1 (0.5), 2 (0.1) against 0.9 -> no cost; images 1 (0.6), 2 (0.3) -> none.
    # Pair 2: captions 0 (0.3), 1 (0.8) against 0.4 -> 0.1, 0.6; images 0 (0.1), 1 (0.2) -> 0, 0.
    hardest = hinge_triplet(SCORES, 0.2, hardest=True)
    assert hardest.tolist() == pytest.approx([0.0, 0.1 + 0.3, 0.6 + 0.0])
    mean = hinge_triplet(SCORES, 0.2, hardest=False)
    assert mean.tolist() == pytest.approx([0.0, (0.1 + 0.0) / 2 + (0.0 + 0.3) / 2, (0.1 + 0.6) / 2])


def test_hinge_margin_is_per_pair_and_same_image_pairs_are_not_negatives():
    per_pair = hinge_triplet(SCORES, torch.tensor([0.2, 0.0, 0.2]))
    # Pair 1 with margin 0: only image 2 (0.8) still beats its 0.7.
    assert per_pair[1] == pytest.approx(0.1)
    same = torch.tensor([[True, False, False], [False, True, True], [False, True, True]])
    masked = hinge_triplet(SCORES, 0.2, same_image=same)
    # Pair 2 only keeps caption 0 (0.3 vs 0.4 -> 0.1) and image 0 (0.1 vs 0.4 -> 0).
    assert masked[2] == pytest.approx(0.1)


def test_info_nce_equals_cross_entropy_and_soft_version_with_labels_one():
    logits = SCORES / 0.1
    expected = (
        torch.nn.functional.cross_entropy(logits, torch.arange(3), reduction="none")
        + torch.nn.functional.cross_entropy(logits.T, torch.arange(3), reduction="none")
    ) / 2
    assert torch.allclose(info_nce(SCORES, 0.1), expected)
    assert torch.allclose(soft_info_nce(SCORES, torch.ones(3), 0.1), expected)


def test_soft_info_nce_with_label_zero_prefers_the_pair_to_look_like_a_negative():
    matched = torch.tensor([[0.9, 0.1], [0.1, 0.9]], requires_grad=True)
    soft_info_nce(matched, torch.zeros(2), 0.1).sum().backward()
    assert (matched.grad.diag() > 0).all()  # descending the loss lowers the pair's own score


def test_complementary_log_grows_when_a_negative_wins():
    probabilities, _ = matching_probabilities(SCORES, 0.1)
    losses = complementary_log(probabilities)
    # Row 2's negative (caption 1) outscores its own caption: the largest complementary loss.
    assert losses.argmax() == 2
    assert (losses >= 0).all()


def test_active_complementary_ignores_the_positive_of_a_zero_label():
    p_i2t, p_t2i = matching_probabilities(SCORES, 0.1)
    trusted = active_complementary(p_i2t, p_t2i, torch.ones(3))
    doubted = active_complementary(p_i2t, p_t2i, torch.zeros(3))
    active = -(torch.log(p_i2t.diag()) + torch.log(p_t2i.diag()))
    complementary = (trusted - active) / 5
    tangent_sums = [(torch.tan(p) * (1 - torch.eye(3))).sum(dim=1) for p in (p_i2t, p_t2i)]
    assert torch.allclose(complementary, tangent_sums[0] + tangent_sums[1], atol=1e-5)
    # With y = 0 the complementary term is a ratio below 1 per direction: bounded.
    assert (doubted <= 5 * 2 + 1e-5).all()
    assert (doubted < trusted).all()
