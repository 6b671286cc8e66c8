"""Contrastive losses over a batch of image and text embeddings."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def info_nce(
    image: torch.Tensor,
    text: torch.Tensor,
    temperature: float,
    same_image: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-pair symmetric InfoNCE (CLIP's loss) for unit-norm ``image`` and ``text`` rows.

    ``same_image[i, j]`` marks captions of the same image, which are not negatives of each
    other; they are removed from the softmax denominators (the diagonal stays).

    Returns
    -------
    torch.Tensor
        ``(batch,)``: the mean of the image-to-text and text-to-image losses of each pair.
    """
    logits = image @ text.T / temperature
    if same_image is not None:
        off_diagonal = same_image & ~torch.eye(len(image), dtype=torch.bool, device=image.device)
        logits = logits.masked_fill(off_diagonal, float("-inf"))
    target = torch.arange(len(image), device=image.device)
    i2t = F.cross_entropy(logits, target, reduction="none")
    t2i = F.cross_entropy(logits.T, target, reduction="none")
    return (i2t + t2i) / 2
