"""``rcar``: Robust Cross-modal retrieval with Alignment Refurbishment (Guo and Ding, FITEE 2023).

No public code exists; the method is rebuilt from the paper's description (``docs/methods.md``
records every reading that had to be made). Three parts:

1. *Multi-task learning* slows the memorisation of mismatched pairs, so that clean and noisy
   pairs stay apart in the loss: besides cross-modal matching (:func:`matching_loss`), every
   batch trains two intra-modal tasks that keep the shared space's neighbourhoods of images and
   of captions those of the frozen encoders (:func:`neighbourhood_loss`). A mismatched caption can
   only be pulled onto a foreign image by bending the text space around it, which these tasks
   resist.
2. *Split*, every epoch: each pair's matching loss against a fixed sample of the corpus, min-max
   scaled, under a two-component beta mixture; the high-loss component is the noise-alignment
   one (:func:`noise_posterior`).
3. *Refurbishment* (:func:`refurbish`): each pair's correspondence label becomes
   ``(1 - w) * 1 + w * P``, with ``w`` its noise posterior and ``P`` the model's own prediction
   that the pair matches (:func:`predict_correspondence`). A pair the mixture calls clean keeps
   its label near 1; one it calls noisy takes the model's prediction, near 0 for a mismatch. The
   next epoch trains the pairs the mixture calls clean with their refurbished labels
   (soft-target InfoNCE); ``train_noisy=True`` trains every pair, as the paper does
   (:func:`training_pairs`).

``cp_p_clean`` is the mixture's clean posterior ``1 - w`` after the last epoch, ``cp_soft_label``
the refurbished label, ``cp_similarity`` the heads' cosine. Pairs the method was not fit on are
measured against a fixed sample of the fit corpus and split by the last epoch's mixtures.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from cleanpairs.contract import Heads
from cleanpairs.core.agreement import AgreementSplit, CaptionAgreement
from cleanpairs.core.heads import TorchHeads
from cleanpairs.core.losses import info_nce, soft_info_nce
from cleanpairs.core.mixture import PosteriorMap, bmm_clean_posterior, clean_subset, fit_bmm_split
from cleanpairs.core.reference import (
    NegativeSample,
    cosine_statistic,
    info_nce_statistic,
    reference_statistics,
)
from cleanpairs.core.state import PairState
from cleanpairs.core.training import Batch, HeadConfig, HeadTrainer, lr_at, progress_bar
from cleanpairs.methods import specs
from cleanpairs.methods.base import FittedState, PairEmbeddings, PairScorer, PairScores
from cleanpairs.methods.registry import register


def matching_loss(batch: Batch, labels: torch.Tensor | None, temperature: float) -> torch.Tensor:
    """The main task: InfoNCE whose target on the pair is its correspondence label (1 when ``None``)."""
    if labels is None:
        return info_nce(batch.scores, temperature, batch.same_image)
    return soft_info_nce(batch.scores, labels, temperature, batch.same_image)


def neighbourhood_loss(
    shared: torch.Tensor, frozen: torch.Tensor, temperature: float, frozen_temperature: float
) -> torch.Tensor:
    """An intra-modal task: KL from the frozen space's in-batch neighbours to the shared space's.

    Row ``i`` compares the softmax over the other items of the batch of ``i``'s cosines in the
    encoder's own space (unit rows ``frozen``) with that in the shared space (unit rows
    ``shared``). It is small when the heads keep each item's neighbours, whatever the pairing.

    Returns
    -------
    torch.Tensor
        ``(batch,)``, one KL divergence per item.
    """
    self_mask = torch.eye(len(shared), dtype=torch.bool, device=shared.device)
    log_student = ((shared @ shared.T) / temperature).masked_fill(self_mask, float("-inf")).log_softmax(dim=1)
    teacher = ((frozen @ frozen.T) / frozen_temperature).masked_fill(self_mask, float("-inf")).softmax(dim=1)
    log_ratio = teacher.clamp(min=1e-12).log() - log_student.masked_fill(self_mask, 0.0)
    return (teacher * log_ratio).sum(dim=1)


def noise_posterior(losses: np.ndarray) -> np.ndarray:
    """The split: posterior of the high-loss (noise-alignment) component of a two-component
    beta mixture over the min-max scaled per-pair losses."""
    return 1 - bmm_clean_posterior(losses, higher_is_clean=False, max_iter=10)


def fit_noise_split(cleanness: np.ndarray) -> tuple[np.ndarray, PosteriorMap]:
    """The split as a function of ``cleanness = -loss``: the clean posterior ``1 - w`` computed as
    :func:`noise_posterior` gives it, and the fitted map of that posterior."""
    posterior, mapping = fit_bmm_split(-cleanness, higher_is_clean=False, max_iter=10)
    return 1 - (1 - posterior), mapping.negated()


def predict_correspondence(losses: np.ndarray) -> np.ndarray:
    """The model's probability that each pair matches: ``exp(-loss)``.

    The loss is the mean of the two directions' cross-entropies against one sample of the corpus,
    so this is the geometric mean of the probabilities the model gives the pair's caption among
    captions and the pair's image among images.
    """
    return np.exp(-np.asarray(losses, dtype=np.float64)).astype(np.float32)


def refurbish(noise: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """Refurbished correspondence labels ``(1 - w) * 1 + w * P``.

    ``w`` is the pair's noise posterior and ``P`` the model's prediction: the given label (1,
    "these match") is trusted as far as the pair looks clean, the model as far as it looks noisy.
    """
    labels = (1 - noise) + noise * prediction
    return np.clip(labels, 0, 1).astype(np.float32)


def training_pairs(noise: np.ndarray, train_noisy: bool, minimum: int) -> np.ndarray | None:
    """The pairs an epoch trains on: every pair with ``train_noisy`` (``None``), otherwise those
    whose noise posterior is below one half (at least ``minimum``, the cleanest first).

    Small heads over frozen features memorise whatever they train on, refurbished labels or
    not; a mismatched pair they have learnt looks clean to the next split.
    """
    if train_noisy:
        return None
    return clean_subset(1 - noise, 0.5, minimum)


class MultiTask:
    """The batch loss of one epoch: matching with the given labels plus the intra-modal tasks.

    The intra-modal tasks embed the batch's images and captions again through the heads (they
    need the embeddings, a batch carries only their scores) and compare them with the frozen
    embeddings, normalised once here.
    """

    def __init__(self, model: HeadTrainer, params: dict[str, Any]) -> None:
        self.model = model
        self.params = params
        self.frozen_images = F.normalize(model.images, dim=1)
        self.frozen_texts = F.normalize(model.texts, dim=1)

    def intra_modal(self, batch: Batch) -> torch.Tensor:
        """Mean of the image task and the caption task, per pair."""
        model, temperature = self.model, self.params["temperature"]
        owners = model.image_index[batch.index]
        images = model.image_head(model.images[owners])
        texts = model.text_head(model.texts[batch.index])
        frozen_t = self.params["neighbour_temperature"]
        image_task = neighbourhood_loss(images, self.frozen_images[owners], temperature, frozen_t)
        text_task = neighbourhood_loss(texts, self.frozen_texts[batch.index], temperature, frozen_t)
        return (image_task + text_task) / 2

    def loss(self, labels: np.ndarray | None) -> Callable[[Batch], torch.Tensor]:
        """The per-pair loss of a batch, with ``labels`` (corpus order) as matching targets."""
        labels_t = None if labels is None else torch.from_numpy(labels)
        weight = self.params["task_weight"]

        def loss(batch: Batch) -> torch.Tensor:
            target = None if labels_t is None else batch.take(labels_t)
            main = matching_loss(batch, target, self.params["temperature"])
            if weight == 0:
                return main
            return main + weight * self.intra_modal(batch)

        return loss


@register
class RCARScorer(PairScorer):
    """Multi-task learning against memorisation, a beta-mixture split, refurbished labels."""

    spec = specs.RCAR

    def _fit(self, pairs: PairEmbeddings, **params: Any) -> PairScores:
        config = HeadConfig.from_params(params)
        warmup, epochs = params["warmup_epochs"], params["epochs"]
        state = PairState(len(pairs))
        model = HeadTrainer(pairs, config, seed=self.seed, device=self.device)
        floor = min(len(pairs), 2 * config.batch_size)
        with progress_bar(model.steps_per_epoch() * (warmup + epochs), self.name) as bar:
            model.progress = bar
            tasks = MultiTask(model, params)
            agreement = CaptionAgreement(pairs.texts, pairs.image_index)
            for epoch in range(warmup + epochs):
                labels, subset = None, None
                if epoch >= warmup:
                    noise, labels = self._refurbish(model, params, agreement)
                    state.update(p_clean=1 - noise, soft_label=labels)
                    subset = training_pairs(noise, params["train_noisy"], floor)
                model.run_epoch(tasks.loss(labels), subset, lr=lr_at(epoch, config.lr, params["lr_step"]))
                self.epoch_done(epoch, model.heads)
            noise, labels, split = self._fit_refurbish(model, params, agreement)
        p_clean = (1 - noise).astype(np.float32)
        self.state_ = FittedState(
            {"image": model.image_head, "text": model.text_head},
            {"p_clean": split},
            NegativeSample.draw(pairs, seed=self.seed),
        )
        state.update(p_clean=p_clean, soft_label=labels)
        return PairScores.without_rematch(
            p_clean,
            labels,
            model.similarity(),
            heads=model.heads(),
            info={"epochs_run": warmup + epochs, "history": state.history_summary()},
        )

    @staticmethod
    def _refurbish(
        model: HeadTrainer, params: dict[str, Any], agreement: CaptionAgreement
    ) -> tuple[np.ndarray, np.ndarray]:
        """Noise posterior and refurbished label of every pair under the model as it stands."""
        noise, labels, _ = RCARScorer._fit_refurbish(model, params, agreement)
        return noise, labels

    @staticmethod
    def _fit_refurbish(
        model: HeadTrainer, params: dict[str, Any], agreement: CaptionAgreement
    ) -> tuple[np.ndarray, np.ndarray, AgreementSplit]:
        """:meth:`_refurbish`, and the fitted split (a function of ``-loss``)."""
        losses = model.corpus_loss(params["temperature"])
        posterior, split = agreement.fit_split(-losses, fit_noise_split, params["agreement"])
        noise = 1 - posterior
        return noise, refurbish(noise, predict_correspondence(losses)), split

    def _score_pairs(self, pairs: PairEmbeddings) -> PairScores:
        """Each pair's loss against the fit corpus's sample, split and refurbished as in the last epoch."""
        state = self.state_
        heads = state.modules["image"], state.modules["text"]
        statistic = info_nce_statistic(self.params_["temperature"])
        fns = {"loss": statistic, "cosine": cosine_statistic}
        measured = reference_statistics(*heads, pairs, state.reference, fns, device=self.device_)
        losses, similarity = measured["loss"], measured["cosine"]
        agreement = CaptionAgreement(pairs.texts, pairs.image_index)
        noise = 1 - state.splits["p_clean"].posterior(-losses, agreement)
        labels = refurbish(noise, predict_correspondence(losses))
        return PairScores.without_rematch((1 - noise).astype(np.float32), labels, similarity)

    def _heads(self) -> Heads:
        return TorchHeads(self.state_.modules["image"], self.state_.modules["text"], self.device_)
