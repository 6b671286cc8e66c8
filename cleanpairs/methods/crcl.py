"""``crcl``: Cross-modal Robust Complementary Learning (Qin et al., NeurIPS 2023).

Training runs in stages; each stage starts a fresh model (a restart), so what the last
model memorised of the noise is forgotten, while the corrected labels are carried over.

- The Active Complementary Loss (:func:`cleanpairs.core.losses.active_complementary`):
  the pair's cross-entropy weighted by its label (active) plus a bounded complementary term
  that only pushes negatives down.
- Self-refining Correspondence Correction (:func:`refine`): each pair's label moves towards
  the model's matching probability of the pair (:func:`matching_probability`) with momentum,
  and labels below a confidence floor are set to 0. During a stage's warm-up the labels are
  frozen; at the end of the first warm-up they are set to the matching probabilities.

``cp_soft_label`` is the self-refined label; ``cp_p_clean`` calibrates it into a posterior
with a two-component Gaussian mixture (:func:`calibrate`); ``cp_similarity`` is the last
model's cosine.

A pair the method was not fit on has no label history. Its evidence is the last model's
matching probability of the pair (:func:`settled_label`), measured against a fixed sample of the
fit corpus as in a batch of ``batch_size``; the refined labels lag behind that evidence, so it is
carried onto the fit corpus's labels by matching quantiles (the fit corpus's own evidence against
its labels), then calibrated by the fitted mixture.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import torch

from cleanpairs.contract import Heads
from cleanpairs.core.agreement import CaptionAgreement
from cleanpairs.core.heads import TorchHeads
from cleanpairs.core.losses import active_complementary, matching_probabilities
from cleanpairs.core.mixture import (
    PosteriorMap,
    fit_gmm_split,
    gmm_clean_posterior,
    map_quantiles,
    quantile_knots,
)
from cleanpairs.core.reference import (
    NegativeSample,
    cosine_statistic,
    matching_probability_statistic,
    reference_statistic,
)
from cleanpairs.core.state import PairState
from cleanpairs.core.training import Batch, HeadConfig, HeadTrainer, lr_at, progress_bar
from cleanpairs.methods import specs
from cleanpairs.methods.base import FittedState, PairEmbeddings, PairScorer, PairScores
from cleanpairs.methods.registry import register


def calibrate(labels: np.ndarray, *, seed: int) -> np.ndarray:
    """The clean posterior of self-refined labels: a two-component Gaussian mixture over them.

    Noisy pairs' labels pile up just above 0, a shape a beta mixture seems made for, yet on
    Flickr8k the Gaussian one estimated the noise rate closer at every rate (20% shuffled: 26.7%
    against the beta mixture's 38.2%; docs/methods.md); both rank pairs as the labels do.
    """
    return gmm_clean_posterior(labels, seed=seed)


def fit_calibration(labels: np.ndarray, *, seed: int) -> tuple[np.ndarray, PosteriorMap]:
    """:func:`calibrate` and its fitted map, for labels of pairs the method was not fit on."""
    return fit_gmm_split(labels, seed=seed)


def settled_label(evidence: np.ndarray, floor: float) -> np.ndarray:
    """The label :func:`refine` settles at when the evidence stays put: the evidence itself,
    0 below ``floor``."""
    evidence = np.asarray(evidence, dtype=np.float32)
    return np.where(evidence < floor, np.float32(0), evidence)


def matching_probability(p_i2t: torch.Tensor, p_t2i: torch.Tensor) -> torch.Tensor:
    """The pair's own probability in both directions, averaged: the evidence labels move to."""
    return (p_i2t.diag() + p_t2i.diag()) / 2


def refine(previous: torch.Tensor, evidence: torch.Tensor, momentum: float, floor: float) -> torch.Tensor:
    """Self-refining correction: ``momentum * previous + (1 - momentum) * evidence``.

    Labels below ``floor`` are set to 0 (CRCL's confident correction)."""
    labels = momentum * previous + (1 - momentum) * evidence
    return torch.where(labels < floor, torch.zeros_like(labels), labels)


@register
class CRCLScorer(PairScorer):
    """Active Complementary Loss with self-refined labels carried across restarts."""

    spec = specs.CRCL

    def _fit(self, pairs: PairEmbeddings, **params: Any) -> PairScores:
        config = HeadConfig.from_params(params)
        stages = specs.parse_stages(params["stages"])
        warmup = params["warmup_epochs"]
        n = len(pairs)
        state = PairState(n)
        labels = torch.from_numpy(state.init("soft_label", 1.0))
        steps = n // min(config.batch_size, n)
        with progress_bar(steps * sum(s + warmup for s in stages), self.name) as bar:
            for stage, epochs in enumerate(stages):
                model = HeadTrainer(pairs, config, seed=self.seed + stage, device=self.device, progress=bar)
                for epoch in range(warmup + epochs):
                    refining = epoch >= warmup
                    first_warmup_end = stage == 0 and epoch == warmup - 1
                    loss = self._loss(labels, params, refining=refining, reset=first_warmup_end)
                    model.run_epoch(loss, lr=lr_at(epoch, config.lr, params["lr_step"]))
                    state.end_epoch("soft_label")
                    self.epoch_done(stage * warmup + sum(stages[:stage]) + epoch, model.heads)
        soft_label = labels.numpy().astype(np.float32)
        agreement = CaptionAgreement(pairs.texts, pairs.image_index)
        p_clean, split = agreement.fit_split(
            soft_label, partial(fit_calibration, seed=self.seed), params["agreement"]
        )
        state.set("p_clean", p_clean)
        self.state_ = FittedState(
            {"image": model.image_head, "text": model.text_head},
            {"p_clean": split},
            NegativeSample.draw(pairs, seed=self.seed),
        )
        evidence = self._evidence(pairs)
        self.state_.arrays["label_map"] = quantile_knots(evidence, soft_label)
        return PairScores.without_rematch(
            p_clean,
            soft_label,
            model.similarity(),
            heads=model.heads(),
            info={"epochs_run": sum(s + warmup for s in stages), "history": state.history_summary()},
        )

    def _evidence(self, pairs: PairEmbeddings) -> np.ndarray:
        """The settled label of each pair under the last model, against the fit corpus's sample."""
        params, state = self.params_, self.state_
        heads = state.modules["image"], state.modules["text"]
        evidence = matching_probability_statistic(params["tau"], params["batch_size"])
        probability = reference_statistic(*heads, pairs, state.reference, evidence, device=self.device_)
        return settled_label(probability, params["floor"])

    def _score_pairs(self, pairs: PairEmbeddings) -> PairScores:
        """Labels from the last model's evidence, read as fit labels, through the fitted calibration."""
        state = self.state_
        heads = state.modules["image"], state.modules["text"]
        soft_label = np.clip(map_quantiles(self._evidence(pairs), state.arrays["label_map"]), 0, 1)
        agreement = CaptionAgreement(pairs.texts, pairs.image_index)
        p_clean = state.splits["p_clean"].posterior(soft_label, agreement)
        similarity = reference_statistic(*heads, pairs, None, cosine_statistic, device=self.device_)
        return PairScores.without_rematch(p_clean, soft_label, similarity)

    def _heads(self) -> Heads:
        return TorchHeads(self.state_.modules["image"], self.state_.modules["text"], self.device_)

    @staticmethod
    def _loss(labels: torch.Tensor, params: dict[str, Any], *, refining: bool, reset: bool):
        """The batch loss; updates ``labels`` (the carried state) in place as batches go by."""

        def loss(batch: Batch) -> torch.Tensor:
            p_i2t, p_t2i = matching_probabilities(batch.scores, params["tau"], batch.same_image)
            index = batch.index.cpu()
            with torch.no_grad():
                evidence = matching_probability(p_i2t, p_t2i).detach().cpu()
                previous = labels[index]
                y = refine(previous, evidence, params["momentum"], params["floor"]) if refining else previous
                labels[index] = evidence if reset else y
            return active_complementary(
                p_i2t,
                p_t2i,
                y.to(batch.scores),
                complementary_weight=params["complementary_weight"],
                same_image=batch.same_image,
            )

        return loss
