"""``tsvc``: Tripartite learning with Semantic Variation Consistency (Lyu et al., AAAI 2025).

Three models of different make learn side by side instead of two copies of one model:

- the *Coordinator* (MLP heads into a small shared space) distributes the data;
- the *Master* (linear heads into the shared space) is the retrieval model the method returns;
- the *Assistant* (an image head into the caption encoder's own space; captions stay as encoded)
  is trained on other data than the Master and helps it judge which pairs are noisy.

After a warm-up on all pairs, every epoch

1. each model estimates every pair's pointwise mutual information between image and caption
   (:func:`pointwise_mi`: the InfoNCE bound against a fixed sample of the corpus, as a share of
   its maximum);
2. the three views give one soft label (:func:`mi_soft_label`): their mean information, lowered
   by how much it varies between the views;
3. the Coordinator distributes the pairs (:func:`distribute`): the Master gets the pairs the
   soft label's mixture takes as clean, the Assistant the pairs the Coordinator's own view takes
   as clean, the Coordinator trains on the pairs both agree on;
4. the Master trains with soft-target InfoNCE on its pairs plus the consistency loss
   (:func:`variation_consistency`), which asks its in-batch matching distributions to agree
   with the Assistant's.

``cp_soft_label`` is the mutual-information soft label after the last epoch, ``cp_p_clean`` the
clean posterior of a two-component Gaussian mixture over it, ``cp_similarity`` the Master's
cosine; the Master's heads are returned for retrieval. Pairs the method was not fit on are
measured by each model against a fixed sample of the fit corpus, and split by the last mixtures.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import numpy as np
import torch

from cleanpairs.contract import Heads
from cleanpairs.core.agreement import CaptionAgreement
from cleanpairs.core.heads import ProjectionHead, TorchHeads, UnitNorm
from cleanpairs.core.losses import info_nce, matching_probabilities, soft_info_nce
from cleanpairs.core.mixture import fit_gmm_split, gmm_clean_posterior
from cleanpairs.core.reference import (
    NegativeSample,
    cosine_statistic,
    info_nce_statistic,
    reference_statistic,
)
from cleanpairs.core.state import PairState
from cleanpairs.core.training import Batch, HeadConfig, HeadTrainer, lr_at, progress_bar
from cleanpairs.methods import specs
from cleanpairs.methods.base import FittedState, PairEmbeddings, PairScorer, PairScores
from cleanpairs.methods.registry import register

MI_NEGATIVES = 1024
"""Images and captions each pair is measured against when its mutual information is estimated."""


class CaptionSpaceTrainer(HeadTrainer):
    """The Assistant's make: an image head into the caption encoder's own space.

    Captions are not projected at all, so the Assistant judges a pair by how close the image
    lands to the caption among the corpus's captions as the text encoder sees them, a view the
    shared-space models do not have.
    """

    def __init__(self, pairs: PairEmbeddings, config: HeadConfig, **kwargs: Any) -> None:
        super().__init__(pairs, config, **kwargs)
        d_image, d_text = pairs.images.shape[1], pairs.texts.shape[1]
        identity = pairs.aligned and d_image == d_text
        head = ProjectionHead(d_image, d_text, config.hidden, identity_init=identity)
        self.image_head = head.to(self.device)
        self.text_head = UnitNorm().to(self.device)
        self.optimizer = torch.optim.AdamW(self.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def pointwise_mi(losses: np.ndarray, n_candidates: int) -> np.ndarray:
    """Each pair's image-caption mutual information as a share of the most the estimate can show.

    ``losses`` are InfoNCE losses against ``n_candidates`` candidates (the pair's own and the
    negatives); ``log(n_candidates) - loss`` is the InfoNCE lower bound on the pointwise mutual
    information, at most ``log(n_candidates)``. 1: the caption is found among all candidates
    with certainty; 0: no better than chance; below 0: worse than chance.
    """
    top = math.log(max(n_candidates, 2))
    return ((top - np.asarray(losses, dtype=np.float64)) / top).astype(np.float32)


def mi_score(views: np.ndarray, variation_weight: float) -> np.ndarray:
    """The views' mean mutual information minus ``variation_weight`` times its spread between them.

    ``views`` is ``(n_views, n_pairs)``; the spread is the standard deviation over the views.
    """
    views = np.asarray(views, dtype=np.float64)
    return (views.mean(axis=0) - variation_weight * views.std(axis=0)).astype(np.float32)


def mi_soft_label(views: np.ndarray, variation_weight: float) -> np.ndarray:
    """TSVC's soft label: :func:`mi_score` clipped to [0, 1].

    A pair all views find informative keeps a label near its information; a pair on which the
    views disagree (one finds the caption, another does not) gets a lower label than the mean
    alone would give.
    """
    return np.clip(mi_score(views, variation_weight), 0.0, 1.0)


@dataclass(frozen=True)
class Distribution:
    """Which pairs each model trains on in one epoch (corpus positions)."""

    master: np.ndarray
    assistant: np.ndarray
    coordinator: np.ndarray


def clean_set(posterior: np.ndarray, threshold: float) -> np.ndarray:
    """Pairs whose posterior is above ``threshold``; the cleaner half when that leaves fewer than 2."""
    chosen = posterior > threshold
    if chosen.sum() < 2:
        chosen = posterior >= np.median(posterior)
    return chosen


def distribute(
    label_posterior: np.ndarray, coordinator_posterior: np.ndarray, threshold: float
) -> Distribution:
    """The Coordinator's distribution of the pairs among the three models.

    The Master gets the pairs the tripartite soft label takes as clean; the Assistant those the
    Coordinator's own view takes as clean (other data than the Master's); the Coordinator the
    pairs both agree on (at least 2; else the Master's).
    """
    by_label = clean_set(label_posterior, threshold)
    by_coordinator = clean_set(coordinator_posterior, threshold)
    agreed = by_label & by_coordinator
    if agreed.sum() < 2:
        agreed = by_label
    return Distribution(np.flatnonzero(by_label), np.flatnonzero(by_coordinator), np.flatnonzero(agreed))


def variation_consistency(
    scores: torch.Tensor, reference: torch.Tensor, temperature: float, same_image: torch.Tensor | None = None
) -> torch.Tensor:
    """The consistency loss: KL from the reference view's in-batch matching distributions to ours.

    For each pair, how its similarities vary over the batch's captions (image to text) and over
    the batch's images (text to image) is turned into a distribution by a softmax; the loss is
    ``KL(reference || ours)`` in both directions, averaged. It is 0 exactly when both views rank
    and space the batch alike, whatever their absolute similarities. ``reference`` carries no
    gradient.

    Returns
    -------
    torch.Tensor
        ``(batch,)``, one loss per pair.
    """
    ours = matching_probabilities(scores, temperature, same_image)
    with torch.no_grad():
        theirs = matching_probabilities(reference.detach(), temperature, same_image)
    total = scores.new_zeros(len(scores))
    for p, q in zip(theirs, ours, strict=True):
        log_ratio = p.clamp_min(1e-12).log() - q.clamp_min(1e-12).log()
        total = total + (p * log_ratio).sum(dim=1)
    return total / 2


def labelled_loss(labels: torch.Tensor, temperature: float) -> Callable[[Batch], torch.Tensor]:
    """Soft-target InfoNCE with each pair's soft label as the weight of its own caption."""
    return lambda b: soft_info_nce(b.scores, b.take(labels), temperature, b.same_image)


VIEWS = ("coordinator", "master", "assistant")
"""The three models' names, in the order their views are stacked."""


class Tripartite(NamedTuple):
    """The three models, in the order their views are stacked."""

    coordinator: HeadTrainer
    master: HeadTrainer
    assistant: HeadTrainer


def build_tripartite(
    pairs: PairEmbeddings, params: dict[str, Any], *, seed: int, device: str = "auto", progress: Any = None
) -> Tripartite:
    """Coordinator, Master and Assistant over ``pairs``: three makes (and three seeds).

    The Master's heads follow the head parameters (``dim``, ``hidden``: linear into a 256-d
    space by default); the Coordinator's are MLPs into a ``coordinator_dim`` space; the
    Assistant maps images into the caption encoder's own space and leaves captions as encoded.
    """
    master_config = HeadConfig.from_params(params)
    optimiser = {
        "batch_size": master_config.batch_size,
        "lr": master_config.lr,
        "grad_clip": master_config.grad_clip,
    }
    coordinator_config = HeadConfig(
        dim=params["coordinator_dim"], hidden=params["coordinator_hidden"], **optimiser
    )
    assistant_config = HeadConfig(hidden=params["assistant_hidden"], **optimiser)
    common = {"device": device, "progress": progress}
    return Tripartite(
        coordinator=HeadTrainer(pairs, coordinator_config, seed=seed, **common),
        master=HeadTrainer(pairs, master_config, seed=seed + 1, **common),
        assistant=CaptionSpaceTrainer(pairs, assistant_config, seed=seed + 2, **common),
    )


@register
class TSVCScorer(PairScorer):
    """Tripartite learning: a Coordinator distributes the pairs, a Master learns to retrieve, an
    Assistant of another make trains on other pairs; soft labels from the views' mutual information."""

    spec = specs.TSVC

    def _fit(self, pairs: PairEmbeddings, **params: Any) -> PairScores:
        warmup, epochs = params["warmup_epochs"], params["epochs"]
        temperature, threshold = params["temperature"], params["p_threshold"]
        n = len(pairs)
        state = PairState(n)
        master_config = HeadConfig.from_params(params)
        agreement = CaptionAgreement(pairs.texts, pairs.image_index)

        def split(score: np.ndarray) -> np.ndarray:
            return agreement.split(score, partial(gmm_clean_posterior, seed=self.seed), params["agreement"])

        steps = n // min(master_config.batch_size, n)
        with progress_bar(3 * steps * (warmup + epochs), self.name) as bar:
            models = build_tripartite(pairs, params, seed=self.seed, device=self.device, progress=bar)
            coordinator, master, assistant = models
            for epoch in range(warmup):
                lr = lr_at(epoch, master_config.lr, params["lr_step"])
                for model in models:
                    model.run_epoch(lambda b: info_nce(b.scores, temperature, b.same_image), lr=lr)
                self.epoch_done(epoch, master.heads)
            for epoch in range(epochs):
                views = self._views(models, pairs, temperature)
                labels = mi_soft_label(views, params["variation_weight"])
                score = mi_score(views, params["variation_weight"])
                label_posterior = split(score)
                shares = distribute(label_posterior, gmm_clean_posterior(views[0], seed=self.seed), threshold)
                state.update(soft_label=labels, p_clean=label_posterior)
                lr = lr_at(warmup + epoch, master_config.lr, params["lr_step"])
                labels_t = torch.from_numpy(labels)
                master.run_epoch(self._master_loss(assistant, labels_t, params), shares.master, lr=lr)
                assistant.run_epoch(labelled_loss(labels_t, temperature), shares.assistant, lr=lr)
                coordinator.run_epoch(
                    lambda b: info_nce(b.scores, temperature, b.same_image), shares.coordinator, lr=lr
                )
                self.epoch_done(warmup + epoch, master.heads)
            views = self._views(models, pairs, temperature)
        soft_label = mi_soft_label(views, params["variation_weight"])
        p_clean, fitted_split = agreement.fit_split(
            mi_score(views, params["variation_weight"]),
            partial(fit_gmm_split, seed=self.seed),
            params["agreement"],
        )
        state.update(soft_label=soft_label, p_clean=p_clean)
        modules = {}
        for name, model in zip(VIEWS, models, strict=True):
            modules[f"{name}.image"], modules[f"{name}.text"] = model.image_head, model.text_head
        self.state_ = FittedState(
            modules,
            {"p_clean": fitted_split},
            NegativeSample.draw(pairs, seed=self.seed),
            scalars={"candidates": 1 + min(MI_NEGATIVES, len(pairs.images) - 1)},
        )
        return PairScores.without_rematch(
            p_clean,
            soft_label,
            master.similarity(),
            heads=master.heads(),
            info={
                "epochs_run": warmup + epochs,
                "history": state.history_summary(),
                "view_mi": {
                    name: round(float(v.mean()), 4)
                    for name, v in zip(VIEWS, views, strict=True)
                },
            },
        )

    @staticmethod
    def _views(models: tuple[HeadTrainer, ...], pairs: PairEmbeddings, temperature: float) -> np.ndarray:
        """``(3, n)``: each model's pointwise mutual information of every pair (Coordinator first)."""
        candidates = 1 + min(MI_NEGATIVES, len(pairs.images) - 1)
        return np.stack(
            [
                pointwise_mi(m.corpus_loss(temperature, negatives=MI_NEGATIVES), candidates)
                for m in models
            ]
        )

    def _score_pairs(self, pairs: PairEmbeddings) -> PairScores:
        """The three views' information of each pair against the fit corpus's sample, through the
        last split."""
        params, state = self.params_, self.state_
        statistic = info_nce_statistic(params["temperature"])

        def measure(name: str, fn: Any, sample: NegativeSample | None) -> np.ndarray:
            heads = state.modules[f"{name}.image"], state.modules[f"{name}.text"]
            return reference_statistic(*heads, pairs, sample, fn, device=self.device_)

        candidates = state.scalars["candidates"]
        losses = [measure(name, statistic, state.reference) for name in VIEWS]
        views = np.stack([pointwise_mi(loss, candidates) for loss in losses])
        agreement = CaptionAgreement(pairs.texts, pairs.image_index)
        weight = params["variation_weight"]
        p_clean = state.splits["p_clean"].posterior(mi_score(views, weight), agreement)
        similarity = measure("master", cosine_statistic, None)
        return PairScores.without_rematch(p_clean, mi_soft_label(views, weight), similarity)

    def _heads(self) -> Heads:
        modules = self.state_.modules
        return TorchHeads(modules["master.image"], modules["master.text"], self.device_)

    @staticmethod
    def _master_loss(
        assistant: HeadTrainer, labels: torch.Tensor, params: dict[str, Any]
    ) -> Callable[[Batch], torch.Tensor]:
        temperature, weight = params["temperature"], params["consistency_weight"]
        labelled = labelled_loss(labels, temperature)

        def loss(batch: Batch) -> torch.Tensor:
            matching = labelled(batch)
            if weight == 0:
                return matching
            reference = assistant.batch_scores(batch.index)
            return matching + weight * variation_consistency(
                batch.scores, reference, temperature, batch.same_image
            )

        return loss
