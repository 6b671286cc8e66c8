"""Per-pair losses over one batch of image and text embeddings.

Every loss takes the batch's score matrix ``scores[i, j] = sim(image_i, text_j)`` (pair ``i``
is image ``i`` with text ``i``) and returns one loss per pair, so that methods can weight,
split or track pairs. ``same_image[i, j]`` marks captions of one image: they are never used
as each other's negatives.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def _negatives(scores: torch.Tensor, same_image: torch.Tensor | None) -> torch.Tensor:
    """True where ``[i, j]`` is a usable negative: off the diagonal, not the same image."""
    negative = ~torch.eye(len(scores), dtype=torch.bool, device=scores.device)
    if same_image is not None:
        negative = negative & ~same_image
    return negative


def hinge_triplet(
    scores: torch.Tensor,
    margin: float | torch.Tensor = 0.2,
    *,
    hardest: bool = True,
    same_image: torch.Tensor | None = None,
) -> torch.Tensor:
    """Bidirectional hinge (VSE++) loss of each pair, with hardest or mean negatives.

    ``margin`` is one number or one margin per pair: NCR's soft margins shrink it for
    pairs whose corrected label is low, so that a doubtful pair is pushed less.

    Returns
    -------
    torch.Tensor
        ``(batch,)``: image-to-text plus text-to-image cost of each pair.
    """
    positive = scores.diag()
    margin = torch.as_tensor(margin, dtype=scores.dtype, device=scores.device)
    if margin.ndim == 0:
        margin = margin.expand(len(scores))
    negative = _negatives(scores, same_image)
    # Row i: captions ranked for image i; column j: images ranked for caption j.
    cost_text = (margin[:, None] + scores - positive[:, None]).clamp(min=0) * negative
    cost_image = (margin[None, :] + scores - positive[None, :]).clamp(min=0) * negative
    if hardest:
        return cost_text.max(dim=1).values + cost_image.max(dim=0).values
    count = negative.sum(dim=1).clamp(min=1)
    return cost_text.sum(dim=1) / count + cost_image.sum(dim=0) / count


def _masked_logits(scores: torch.Tensor, temperature: float, same_image: torch.Tensor | None) -> torch.Tensor:
    logits = scores / temperature
    if same_image is not None:
        off_diagonal = same_image & ~torch.eye(len(scores), dtype=torch.bool, device=scores.device)
        logits = logits.masked_fill(off_diagonal, float("-inf"))
    return logits


def info_nce(
    scores: torch.Tensor, temperature: float, same_image: torch.Tensor | None = None
) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP's loss) of each pair.

    Returns
    -------
    torch.Tensor
        ``(batch,)``: the mean of the image-to-text and text-to-image losses of each pair.
    """
    logits = _masked_logits(scores, temperature, same_image)
    target = torch.arange(len(scores), device=scores.device)
    i2t = F.cross_entropy(logits, target, reduction="none")
    t2i = F.cross_entropy(logits.T, target, reduction="none")
    return (i2t + t2i) / 2


def soft_info_nce(
    scores: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    same_image: torch.Tensor | None = None,
) -> torch.Tensor:
    """InfoNCE whose target puts ``labels[i]`` on pair ``i`` and the rest uniformly on its negatives.

    With every label 1 this is :func:`info_nce`; a label of 0 asks the pair to look like any
    negative, which is what a rectified label of a mismatched pair means.

    Returns
    -------
    torch.Tensor
        ``(batch,)``: the mean of the two directions' cross-entropies.
    """
    logits = _masked_logits(scores, temperature, same_image)
    negative = _negatives(scores, same_image).to(scores.dtype)
    spread = negative / negative.sum(dim=1, keepdim=True).clamp(min=1)
    eye = torch.eye(len(scores), dtype=scores.dtype, device=scores.device)
    target = labels[:, None] * eye + (1 - labels[:, None]) * spread
    i2t = -(target * F.log_softmax(logits, dim=1).nan_to_num(neginf=0.0)).sum(dim=1)
    t2i = -(target * F.log_softmax(logits.T, dim=1).nan_to_num(neginf=0.0)).sum(dim=1)
    return (i2t + t2i) / 2


def matching_probabilities(
    scores: torch.Tensor, temperature: float, same_image: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-softmax (image to text) and column-softmax (text to image) of ``scores / temperature``.

    Returns ``(p_i2t, p_t2i)``, both ``(batch, batch)`` with row ``i`` belonging to pair ``i``.
    """
    logits = _masked_logits(scores, temperature, same_image)
    return logits.softmax(dim=1), logits.T.softmax(dim=1)


def complementary_log(probabilities: torch.Tensor, same_image: torch.Tensor | None = None) -> torch.Tensor:
    """RCL's complementary loss: ``-sum_j log(1 - p_ij)`` over each row's negatives.

    It only says "pair i is not text j"; a wrong pair cannot mislead it much, because it
    never asks for a positive to win.

    Returns
    -------
    torch.Tensor
        ``(batch,)``, one loss per row.
    """
    negative = _negatives(probabilities, same_image)
    return -(torch.log1p(-probabilities.clamp(max=1 - 1e-6)) * negative).sum(dim=1)


def active_complementary(
    p_i2t: torch.Tensor,
    p_t2i: torch.Tensor,
    labels: torch.Tensor,
    *,
    complementary_weight: float = 5.0,
    same_image: torch.Tensor | None = None,
) -> torch.Tensor:
    """CRCL's Active Complementary Loss of each pair.

    The active term is the pair's cross-entropy weighted by its label ``y``. The
    complementary term pushes the pair's negatives down through the bounded ``tan(p)``,
    normalised by ``(sum_j tan p_ij) ** (1 - y)``: for a trusted pair (``y = 1``) it is a plain
    sum, for a doubtful one it becomes a ratio that cannot grow large.

    Parameters
    ----------
    p_i2t, p_t2i
        Matching probabilities from :func:`matching_probabilities`.
    labels
        ``(batch,)`` corrected correspondence labels in [0, 1].
    """
    eps = 1e-10
    negative = _negatives(p_i2t, same_image).to(p_i2t.dtype)
    active = -(torch.log(p_i2t.diag() + eps) + torch.log(p_t2i.diag() + eps))
    complementary = torch.zeros_like(labels)
    for p in (p_i2t, p_t2i):
        tangent = torch.tan(p)
        complementary = complementary + (tangent * negative).sum(dim=1) / (
            tangent.sum(dim=1) ** (1 - labels) + eps
        )
    return labels * active + complementary_weight * complementary
