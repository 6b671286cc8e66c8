"""The one training loop of the project: projection heads over frozen embeddings.

A :class:`HeadTrainer` owns one image head, one text head and their optimiser. A method
drives it epoch by epoch, handing :meth:`HeadTrainer.run_epoch` a per-pair loss of a
:class:`Batch` and the pairs to train on; between epochs it reads per-pair statistics
(:meth:`HeadTrainer.pair_statistic`, :meth:`HeadTrainer.similarity`) to split, correct or
track pairs. Warm-up, learning-rate steps, seeds, progress and the device live here once.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from cleanpairs.contract import PairEmbeddings
from cleanpairs.core.heads import ProjectionHead, TorchHeads
from cleanpairs.device import resolve_device


@dataclass(frozen=True)
class HeadConfig:
    """Sizes and optimisation settings of a pair of projection heads."""

    dim: int = 256
    hidden: int = 512
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    grad_clip: float = 2.0

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> HeadConfig:
        """The sizes and settings a method's checked parameters name (others keep their defaults)."""
        names = ("dim", "hidden", "batch_size", "lr", "weight_decay", "grad_clip")
        return cls(**{name: params[name] for name in names if name in params})


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a torch generator for batch order."""
    random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@dataclass
class Batch:
    """One training batch: pair ``i`` of the batch is image ``i`` with text ``i``.

    Attributes
    ----------
    index
        ``(b,)`` the pairs' positions in the corpus (to look up per-pair state).
    scores
        ``(b, b)`` cosine of every image of the batch with every text of the batch.
    same_image
        ``(b, b)`` true where two pairs show the same image (never negatives of each other).
    """

    index: torch.Tensor
    scores: torch.Tensor
    same_image: torch.Tensor

    def take(self, values: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Per-pair corpus values (a length-n array) for the pairs of this batch."""
        tensor = values if isinstance(values, torch.Tensor) else torch.from_numpy(np.asarray(values))
        return tensor.to(self.index.device)[self.index].to(self.scores.dtype)


LossFn = Callable[[Batch], torch.Tensor]


def lr_at(epoch: int, base: float, step_every: int | None, factor: float = 0.1) -> float:
    """Step decay as NCR and CRCL use it: ``base * factor ** (epoch // step_every)``."""
    if not step_every:
        return base
    return base * factor ** (epoch // step_every)


class HeadTrainer:
    """An image head and a text head over one corpus's frozen embeddings, and their optimiser.

    Parameters
    ----------
    pairs
        The corpus; its image and text matrices move to ``device`` once.
    config
        Head sizes and optimiser settings. With an aligned encoder whose image and text
        sizes are equal, the heads keep that size and start as the identity.
    seed
        Seeds the heads' initial weights and the batch order.
    progress
        A shared progress bar counting training steps, or ``None``.
    """

    def __init__(
        self,
        pairs: PairEmbeddings,
        config: HeadConfig,
        *,
        seed: int = 0,
        device: str = "auto",
        progress: tqdm | None = None,
    ) -> None:
        self.config = config
        self.device = resolve_device(device)
        self.generator = seed_everything(seed)
        d_image, d_text = pairs.images.shape[1], pairs.texts.shape[1]
        identity = pairs.aligned and d_image == d_text
        dim = d_image if identity else config.dim
        self.image_head = ProjectionHead(d_image, dim, config.hidden, identity_init=identity).to(self.device)
        self.text_head = ProjectionHead(d_text, dim, config.hidden, identity_init=identity).to(self.device)
        self.optimizer = torch.optim.AdamW(self.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.images = torch.from_numpy(pairs.images).to(self.device)
        self.texts = torch.from_numpy(pairs.texts).to(self.device)
        self.image_index = torch.from_numpy(pairs.image_index).to(self.device)
        self.n = len(pairs)
        self.progress = progress
        self.epochs_run = 0

    def parameters(self) -> list[torch.nn.Parameter]:
        return [*self.image_head.parameters(), *self.text_head.parameters()]

    def steps_per_epoch(self, n_pairs: int | None = None) -> int:
        """Optimiser steps one epoch over ``n_pairs`` pairs takes (the last partial batch is dropped)."""
        n = self.n if n_pairs is None else n_pairs
        return max(1, n // max(2, min(self.config.batch_size, n)))

    def _batches(self, subset: np.ndarray | None, batch_size: int, drop_last: bool) -> Iterator[torch.Tensor]:
        pool = torch.arange(self.n) if subset is None else torch.from_numpy(np.asarray(subset, np.int64))
        order = pool[torch.randperm(len(pool), generator=self.generator)].to(self.device)
        size = max(2, min(batch_size, len(order)))
        stop = len(order) - size + 1 if drop_last else len(order)
        for start in range(0, max(stop, 1 if drop_last else 0), size):
            yield order[start : start + size]

    def batch(self, idx: torch.Tensor) -> Batch:
        """The pairs ``idx`` as one batch: their score matrix under the current heads, with
        gradients (methods that train on a second kind of batch, as L2RM's noisy one, use it)."""
        owners = self.image_index[idx]
        scores = self.image_head(self.images[owners]) @ self.text_head(self.texts[idx]).T
        return Batch(idx, scores, owners[:, None] == owners[None, :])

    def run_epoch(
        self, loss_fn: LossFn, subset: np.ndarray | None = None, *, lr: float | None = None
    ) -> float:
        """Train one epoch over ``subset`` (all pairs by default) in shuffled batches.

        ``loss_fn`` returns one loss per pair of the batch; their mean is minimised.

        Returns
        -------
        float
            The mean training loss of the epoch.
        """
        if lr is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        self.image_head.train()
        self.text_head.train()
        total, steps = 0.0, 0
        for idx in self._batches(subset, self.config.batch_size, drop_last=True):
            loss = loss_fn(self.batch(idx)).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.parameters(), self.config.grad_clip)
            self.optimizer.step()
            total += float(loss.detach())
            steps += 1
            if self.progress is not None:
                self.progress.update()
        self.epochs_run += 1
        return total / max(steps, 1)

    @torch.no_grad()
    def pair_statistic(self, fn: LossFn, *, batch_size: int | None = None) -> np.ndarray:
        """A per-pair statistic that needs in-batch negatives (a loss), for every pair.

        The pairs are cut into shuffled batches as in training, so each pair is measured
        against random negatives, the way the papers compute their per-sample losses.

        Returns
        -------
        numpy.ndarray
            ``(n,)`` float32, in corpus order.
        """
        self.image_head.eval()
        self.text_head.eval()
        out = torch.empty(self.n, device=self.device)
        for idx in self._batches(None, batch_size or self.config.batch_size, drop_last=False):
            out[idx] = fn(self.batch(idx)).float()
        return out.cpu().numpy()

    @torch.no_grad()
    def batch_scores(self, index: torch.Tensor) -> torch.Tensor:
        """This model's score matrix on another trainer's batch (no gradient): a peer's view."""
        self.image_head.eval()
        self.text_head.eval()
        scores = self.batch(index.to(self.device)).scores
        self.image_head.train()
        self.text_head.train()
        return scores

    @torch.no_grad()
    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every distinct image and every text in the shared space (unit rows)."""
        self.image_head.eval()
        self.text_head.eval()
        return self.image_head(self.images), self.text_head(self.texts)

    @torch.no_grad()
    def corpus_loss(self, temperature: float, *, negatives: int = 1024, block: int = 4096) -> np.ndarray:
        """Each pair's InfoNCE loss against a large fixed sample of the corpus, not one batch.

        Text to image: the caption's own image against up to ``negatives`` images. Image to
        text: the caption against up to ``negatives`` captions of other images. One sample
        serves every pair, so the losses are comparable across pairs, which the split needs.

        Returns
        -------
        numpy.ndarray
            ``(n,)`` float32, the mean of the two directions, in corpus order.
        """
        image, text = self.embeddings()
        idx = self.image_index
        positive = (image[idx] * text).sum(dim=1) / temperature
        pick_images = torch.randperm(len(image), generator=self.generator)[:negatives].to(self.device)
        pick_texts = torch.randperm(self.n, generator=self.generator)[:negatives].to(self.device)
        t2i = torch.empty(self.n, device=self.device)
        i2t = torch.empty(self.n, device=self.device)
        for start in range(0, self.n, block):
            rows = slice(start, start + block)
            own = positive[rows, None]
            to_images = text[rows] @ image[pick_images].T / temperature
            to_images = to_images.masked_fill(idx[rows, None] == pick_images[None, :], float("-inf"))
            t2i[rows] = torch.logsumexp(torch.cat([own, to_images], dim=1), dim=1)
            to_texts = image[idx[rows]] @ text[pick_texts].T / temperature
            to_texts = to_texts.masked_fill(idx[rows, None] == idx[pick_texts][None, :], float("-inf"))
            i2t[rows] = torch.logsumexp(torch.cat([own, to_texts], dim=1), dim=1)
        loss = (t2i + i2t) / 2 - positive
        return loss.float().cpu().numpy()

    def similarity(self) -> np.ndarray:
        """Cosine of each pair's image and caption, ``(n,)`` float32 in corpus order."""
        image, text = self.embeddings()
        return (image[self.image_index] * text).sum(dim=1).float().cpu().numpy()

    def heads(self) -> TorchHeads:
        """The trained heads, for embedding queries."""
        return TorchHeads(self.image_head, self.text_head, self.device)


def progress_bar(total: int, desc: str) -> tqdm:
    """A step counter that stays quiet when not on a terminal."""
    return tqdm(total=total, desc=desc, unit="step", leave=False, disable=None)
