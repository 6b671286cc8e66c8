"""A fixed sample of a fit corpus that pairs the fit never saw are measured against.

Several methods split on a pair's loss against negatives: in-batch ones, or a fresh random
sample of the corpus at every split (:meth:`cleanpairs.core.training.HeadTrainer.corpus_loss`).
A fitted scorer keeps one such sample of its fit corpus (:class:`NegativeSample`, raw encoder
embeddings), so that a pair of any later shard is measured against the same negatives whatever
else is scored with it. A negative is left out where it shows the pair's own image (raw
embeddings equal up to rounding), as the fit leaves out the captions of a pair's image.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from cleanpairs.contract import PairEmbeddings
from cleanpairs.errors import ParameterError

REFERENCE_SIZE = 1024
"""Images and captions in a :class:`NegativeSample` (as many as ``corpus_loss`` measures against)."""

SAME_IMAGE = 1 - 1e-6
"""Cosine of raw image embeddings at and above which two images count as the same one."""


@dataclass(frozen=True, eq=False)
class NegativeSample:
    """Raw embeddings of a fit corpus's sampled images and captions.

    Attributes
    ----------
    images
        ``(k, d_image)`` distinct images.
    texts
        ``(k', d_text)`` captions.
    text_images
        ``(k', d_image)`` the image each of those captions belongs to.
    """

    images: np.ndarray
    texts: np.ndarray
    text_images: np.ndarray

    @classmethod
    def draw(cls, pairs: PairEmbeddings, *, size: int | None = None, seed: int = 0) -> NegativeSample:
        """Up to ``size`` (default :data:`REFERENCE_SIZE`) distinct images and as many captions of
        ``pairs``, drawn with ``seed``."""
        size = REFERENCE_SIZE if size is None else size
        rng = np.random.default_rng(seed)
        images = np.sort(rng.permutation(len(pairs.images))[:size])
        texts = np.sort(rng.permutation(len(pairs))[:size])
        return cls(pairs.images[images], pairs.texts[texts], pairs.images[pairs.image_index[texts]])

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"images": self.images, "texts": self.texts, "text_images": self.text_images}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> NegativeSample:
        """Rebuild a sample from :meth:`to_arrays` (``ParameterError`` when malformed)."""
        try:
            images, texts, text_images = (
                np.ascontiguousarray(arrays[k], dtype=np.float32) for k in ("images", "texts", "text_images")
            )
        except KeyError as err:
            raise ParameterError(f"a negative sample lacks {err.args[0]!r}") from None
        if images.ndim != 2 or texts.ndim != 2 or text_images.shape != (len(texts), images.shape[1]):
            raise ParameterError("a negative sample's arrays do not fit together")
        return cls(images, texts, text_images)


StatisticFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``fn(positive, to_images, image_ok, to_texts, text_ok)`` -> one value per pair: the pair's
cosine ``(b,)``, its caption's cosines with the sample's images and its image's with the sample's
captions ``(b, k)``, and where those are usable negatives."""


def _unit(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.normalize(x, dim=-1)


def reference_statistic(
    image_head: nn.Module,
    text_head: nn.Module,
    pairs: PairEmbeddings,
    sample: NegativeSample | None,
    fn: StatisticFn,
    *,
    device: torch.device,
    block: int = 4096,
) -> np.ndarray:
    """A per-pair statistic of ``pairs`` against ``sample`` in the space of the given heads
    (without a sample, ``fn`` gets no negatives: :func:`cosine_statistic`).

    Returns
    -------
    numpy.ndarray
        ``(n,)`` float32 in the order of ``pairs``.
    """
    one = reference_statistics(image_head, text_head, pairs, sample, {"it": fn}, device=device, block=block)
    return one["it"]


@torch.inference_mode()
def reference_statistics(
    image_head: nn.Module,
    text_head: nn.Module,
    pairs: PairEmbeddings,
    sample: NegativeSample | None,
    fns: dict[str, StatisticFn],
    *,
    device: torch.device,
    block: int = 4096,
) -> dict[str, np.ndarray]:
    """Several statistics of :func:`reference_statistic` from one pass over ``pairs`` (the heads'
    embeddings and the scores against the sample are computed once for all of them).

    Returns
    -------
    dict
        Each name of ``fns`` -> ``(n,)`` float32 in the order of ``pairs``.
    """
    for head in (image_head, text_head):
        head.eval()

    def tensor(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)

    if sample is None:
        sample = NegativeSample(
            np.zeros((0, pairs.images.shape[1]), np.float32),
            np.zeros((0, pairs.texts.shape[1]), np.float32),
            np.zeros((0, pairs.images.shape[1]), np.float32),
        )
    ref_images = image_head(tensor(sample.images))
    ref_texts = text_head(tensor(sample.texts))
    raw_ref_images, raw_text_images = _unit(tensor(sample.images)), _unit(tensor(sample.text_images))
    out: dict[str, list[torch.Tensor]] = {name: [] for name in fns}
    # Images are embedded block by block with their pairs, so a shard's memory stays one block's.
    for start in range(0, len(pairs), block):
        rows = slice(start, start + block)
        raw = tensor(pairs.images[pairs.image_index[rows]])
        own, raw_own = image_head(raw), _unit(raw)
        texts = text_head(tensor(pairs.texts[rows]))
        positive = (own * texts).sum(dim=1)
        image_ok = raw_own @ raw_ref_images.T < SAME_IMAGE
        text_ok = raw_own @ raw_text_images.T < SAME_IMAGE
        to_images, to_texts = texts @ ref_images.T, own @ ref_texts.T
        for name, fn in fns.items():
            out[name].append(fn(positive, to_images, image_ok, to_texts, text_ok).float())
    return {name: torch.cat(v).cpu().numpy() if v else np.zeros(0, np.float32) for name, v in out.items()}


def _logits(scores: torch.Tensor, ok: torch.Tensor, temperature: float) -> torch.Tensor:
    """``scores / temperature`` with the unusable negatives at ``-inf``."""
    return (scores / temperature).masked_fill(~ok, -math.inf)


def cosine_statistic(
    positive: torch.Tensor,
    to_images: torch.Tensor,
    image_ok: torch.Tensor,
    to_texts: torch.Tensor,
    text_ok: torch.Tensor,
) -> torch.Tensor:
    """Each pair's cosine in the heads' space (no negatives needed)."""
    return positive


def info_nce_statistic(temperature: float) -> StatisticFn:
    """Each pair's InfoNCE loss against the sample, the mean of both directions: the loss
    ``corpus_loss`` gives a pair of the fit corpus."""

    def fn(
        positive: torch.Tensor, to_images: torch.Tensor, image_ok: torch.Tensor,
        to_texts: torch.Tensor, text_ok: torch.Tensor,
    ) -> torch.Tensor:
        own = (positive / temperature)[:, None]
        t2i = torch.logsumexp(torch.cat([own, _logits(to_images, image_ok, temperature)], dim=1), dim=1)
        i2t = torch.logsumexp(torch.cat([own, _logits(to_texts, text_ok, temperature)], dim=1), dim=1)
        return (t2i + i2t) / 2 - own[:, 0]

    return fn


def hinge_statistic(margin: float) -> StatisticFn:
    """Each pair's bidirectional hinge cost with mean negatives, the negatives drawn from the
    sample instead of a batch (``hinge_triplet(..., hardest=False)``)."""

    def fn(
        positive: torch.Tensor, to_images: torch.Tensor, image_ok: torch.Tensor,
        to_texts: torch.Tensor, text_ok: torch.Tensor,
    ) -> torch.Tensor:
        total = torch.zeros_like(positive)
        for scores, ok in ((to_texts, text_ok), (to_images, image_ok)):
            cost = (margin + scores - positive[:, None]).clamp(min=0) * ok
            total = total + cost.sum(dim=1) / ok.sum(dim=1).clamp(min=1)
        return total

    return fn


def matching_probability_statistic(temperature: float, batch_size: int) -> StatisticFn:
    """Each pair's own softmax probability in a batch of ``batch_size``, averaged over both
    directions, with the batch's other members' share replaced by its expectation over the
    sample: ``exp(s / t) / (exp(s / t) + (b - 1) * mean_j exp(s_j / t))``."""
    others = math.log(max(batch_size - 1, 1))

    def fn(
        positive: torch.Tensor, to_images: torch.Tensor, image_ok: torch.Tensor,
        to_texts: torch.Tensor, text_ok: torch.Tensor,
    ) -> torch.Tensor:
        own = positive / temperature
        total = torch.zeros_like(positive)
        for scores, ok in ((to_texts, text_ok), (to_images, image_ok)):
            count = ok.sum(dim=1).clamp(min=1).to(scores.dtype)
            log_mean = torch.logsumexp(_logits(scores, ok, temperature), dim=1) - torch.log(count)
            total = total + torch.sigmoid(own - (others + log_mean))
        return total / 2

    return fn
