"""``ncr``: Learning with Noisy Correspondence (Huang et al., NeurIPS 2021).

Two models learn side by side. After a warm-up, every epoch

1. measures each pair's loss under each model and fits a two-component Gaussian mixture to
   it: the low-loss component is the clean one (:func:`clean_posterior`, the *split*);
2. trains each model on the split of the *other* one (*co-divide*), so that one model's
   mistakes are not fed back to itself;
3. rectifies the labels (:func:`rectify`): a pair taken as clean keeps ``w + (1 - w) P``
   with ``w`` its clean posterior and ``P`` the model's own correspondence prediction
   (:func:`predict_correspondence`); a pair taken as noisy gets the two models' mean
   prediction;
4. trains with the bidirectional hinge loss on hardest negatives whose margin shrinks with
   the rectified label (:func:`soft_margin`).

``cp_p_clean`` is the mean of the two models' clean posteriors after the last epoch,
``cp_soft_label`` the rectified label, ``cp_similarity`` the mean of their cosines.

Pairs the models were not trained on (:meth:`NCRScorer.score_pairs`) are measured against a
fixed sample of the fit corpus instead of a batch or a fresh sample, and split by the mixtures
of the last split (:func:`fit_clean_posterior`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch

from cleanpairs.contract import Heads
from cleanpairs.core.agreement import AgreementSplit, CaptionAgreement, of_cleanness
from cleanpairs.core.heads import AveragedHeads, TorchHeads
from cleanpairs.core.losses import hinge_triplet, info_nce, soft_info_nce
from cleanpairs.core.mixture import PosteriorMap, fit_gmm_split, gmm_clean_posterior
from cleanpairs.core.reference import (
    NegativeSample,
    cosine_statistic,
    hinge_statistic,
    info_nce_statistic,
    reference_statistic,
    reference_statistics,
)
from cleanpairs.core.state import PairState
from cleanpairs.core.training import Batch, HeadConfig, HeadTrainer, lr_at, progress_bar
from cleanpairs.methods import specs
from cleanpairs.methods.base import FittedState, PairEmbeddings, PairScorer, PairScores
from cleanpairs.methods.registry import register


def soft_margin(labels: torch.Tensor, margin: float, kind: str) -> torch.Tensor:
    """NCR's soft margin: ``margin`` scaled by a rising function of the rectified label."""
    if kind == "linear":
        return margin * labels
    if kind == "exponential":
        return margin * (torch.pow(10.0, labels) - 1) / 9
    return margin * (torch.sin(math.pi * labels - math.pi / 2) / 2 + 0.5)


def per_pair_loss(batch: Batch, margin: float) -> torch.Tensor:
    """The statistic NCR splits on: hinge loss with mean negatives, fixed margin."""
    return hinge_triplet(batch.scores, margin, hardest=False, same_image=batch.same_image)


def predict_correspondence(scores: torch.Tensor, margin: float, same_image: torch.Tensor) -> torch.Tensor:
    """NCR's correspondence prediction of each pair of a batch, in [0, 1].

    How far the pair's mean-negative hinge cost stays below the margin, divided by the
    mean of the batch's top tenth so that the clearest pairs of every batch read as 1.
    """
    cost = hinge_triplet(scores, margin, hardest=False, same_image=same_image) / 2
    p = (margin - cost).clamp(min=0, max=margin)
    if len(p) == 0:  # a batch of a selection that kept no pair
        return p
    top = torch.topk(p, len(p) // 10 + 1).values.mean()
    return (p / top.clamp(min=1e-12)).clamp(0, 1)


def clean_posterior(losses: np.ndarray, *, seed: int) -> np.ndarray:
    """The split: posterior of the low-loss component of a 2-GMM over min-max scaled losses."""
    return gmm_clean_posterior(
        losses, seed=seed, higher_is_clean=False, max_iter=10, tol=1e-2, reg_covar=5e-4
    )


def fit_clean_posterior(losses: np.ndarray, *, seed: int) -> tuple[np.ndarray, PosteriorMap]:
    """:func:`clean_posterior` and its fitted map (of the losses)."""
    return fit_gmm_split(losses, seed=seed, higher_is_clean=False, max_iter=10, tol=1e-2, reg_covar=5e-4)


def split_threshold(posterior: np.ndarray, threshold: float) -> float:
    """The posterior above which a pair is taken as clean: ``threshold``, or, when no pair would
    be noisy, the posterior of the least clean 1% (set aside anyway)."""
    if posterior.min() > threshold:
        return float(np.sort(posterior)[len(posterior) // 100])
    return threshold


def split_clean(posterior: np.ndarray, threshold: float) -> np.ndarray:
    """Pairs taken as clean; when none would be noisy, the least clean 1% are set aside anyway."""
    return posterior > split_threshold(posterior, threshold)


def margin_left(cost: np.ndarray, margin: float) -> np.ndarray:
    """How far half the mean-negative hinge cost stays below the margin, in ``[0, margin]``."""
    return np.clip(margin - np.asarray(cost, dtype=np.float64) / 2, 0, margin)


def correspondence_from_cost(cost: np.ndarray, margin: float, top: float) -> np.ndarray:
    """:func:`predict_correspondence` of pairs measured against a sample: :func:`margin_left`
    divided by ``top`` (the fit corpus's top tenth, in place of a batch's)."""
    return np.clip(margin_left(cost, margin) / max(top, 1e-12), 0, 1).astype(np.float32)


def top_tenth(values: np.ndarray) -> float:
    """Mean of the largest tenth of ``values`` (at least one), as a batch's clearest pairs."""
    return float(np.sort(values)[::-1][: len(values) // 10 + 1].mean())


def rectify(
    posterior: torch.Tensor, own: torch.Tensor, mean: torch.Tensor, clean: torch.Tensor
) -> torch.Tensor:
    """Co-rectified labels: ``w + (1 - w) P_own`` for clean pairs, the models' mean ``P`` otherwise."""
    return torch.where(clean, posterior + (1 - posterior) * own, mean)


@register
class NCRScorer(PairScorer):
    """Noisy Correspondence Rectifier: co-divided GMM splits, rectified labels, soft margins."""

    spec = specs.NCR

    def _fit(self, pairs: PairEmbeddings, **params: Any) -> PairScores:
        config = HeadConfig.from_params(params)
        warmup, epochs = params["warmup_epochs"], params["epochs"]
        n = len(pairs)
        state = PairState(n)
        agreement = CaptionAgreement(pairs.texts, pairs.image_index)
        steps = n // min(config.batch_size, n)
        with progress_bar(2 * steps * (warmup + epochs), self.name) as bar:
            models = [
                HeadTrainer(pairs, config, seed=self.seed + k, device=self.device, progress=bar)
                for k in range(2)
            ]
            def averaged() -> AveragedHeads:
                return AveragedHeads([m.heads() for m in models])

            for epoch in range(warmup):
                for model in models:
                    model.run_epoch(self._warmup_loss(params), lr=lr_at(epoch, config.lr, params["lr_step"]))
                self.epoch_done(epoch, averaged)
            for epoch in range(epochs):
                posteriors = [self._split(m, params, self.seed, agreement) for m in models]
                state.update(p_clean=np.mean(posteriors, axis=0))
                train_noisy = epoch >= params["noisy_from"] * epochs
                for k, model in enumerate(models):
                    # Co-divide: each model learns from the split its peer made.
                    divided = posteriors[1 - k]
                    clean = split_clean(divided, params["p_threshold"])
                    subset = None if train_noisy else np.flatnonzero(clean)
                    loss = self._training_loss(models[1 - k], divided, clean, params)
                    model.run_epoch(loss, subset, lr=lr_at(warmup + epoch, config.lr, params["lr_step"]))
                self.epoch_done(warmup + epoch, averaged)
            final = [self._fit_split(m, params, self.seed, agreement) for m in models]
        posteriors = [posterior for posterior, _ in final]
        p_clean = np.mean(posteriors, axis=0).astype(np.float32)
        soft_label = self._final_labels(models, p_clean, split_clean(p_clean, params["p_threshold"]), params)
        similarity = np.mean([m.similarity() for m in models], axis=0)
        state.update(p_clean=p_clean, soft_label=soft_label)
        self.state_ = self._fitted(pairs, models, [split for _, split in final], p_clean, params)
        return PairScores.without_rematch(
            p_clean,
            soft_label,
            similarity,
            heads=AveragedHeads([m.heads() for m in models]),
            info={"epochs_run": warmup + epochs, "history": state.history_summary()},
        )

    @staticmethod
    def _warmup_loss(params: dict[str, Any]) -> Callable[[Batch], torch.Tensor]:
        if params["loss"] == "hinge":
            return lambda b: per_pair_loss(b, params["margin"])
        return lambda b: info_nce(b.scores, params["temperature"], b.same_image)

    @staticmethod
    def _split(
        model: HeadTrainer,
        params: dict[str, Any],
        seed: int,
        agreement: CaptionAgreement,
    ) -> np.ndarray:
        return NCRScorer._fit_split(model, params, seed, agreement)[0]

    @staticmethod
    def _fit_split(
        model: HeadTrainer,
        params: dict[str, Any],
        seed: int,
        agreement: CaptionAgreement,
    ) -> tuple[np.ndarray, AgreementSplit]:
        """One model's split of the corpus, and the fitted split (a function of ``-loss``)."""
        if params["loss"] == "hinge":
            losses = model.pair_statistic(lambda b: per_pair_loss(b, params["margin"]))
        else:
            losses = model.corpus_loss(params["temperature"])

        fit = of_cleanness(partial(fit_clean_posterior, seed=seed))
        return agreement.fit_split(-losses, fit, params["agreement"])

    def _fitted(
        self,
        pairs: PairEmbeddings,
        models: list[HeadTrainer],
        splits: list[AgreementSplit],
        p_clean: np.ndarray,
        params: dict[str, Any],
    ) -> FittedState:
        """What scoring unseen pairs needs: both models' heads and splits, a sample of the corpus
        to measure losses against, and each model's top-tenth prediction level on the corpus."""
        reference = NegativeSample.draw(pairs, seed=self.seed)
        modules = {}
        tops = []
        for k, model in enumerate(models):
            modules[f"m{k}.image"], modules[f"m{k}.text"] = model.image_head, model.text_head
            heads = model.image_head, model.text_head
            hinge = hinge_statistic(params["margin"])
            cost = reference_statistic(*heads, pairs, reference, hinge, device=model.device)
            tops.append(top_tenth(margin_left(cost, params["margin"])))
        return FittedState(
            modules,
            {f"m{k}": split for k, split in enumerate(splits)},
            reference,
            scalars={"top": tops, "clean_threshold": split_threshold(p_clean, params["p_threshold"])},
        )

    def _score_pairs(self, pairs: PairEmbeddings) -> PairScores:
        """Each model's loss against the fit corpus's sample, through its last split; labels
        rectified as in the last epoch with predictions against the same sample."""
        params, state = self.params_, self.state_
        agreement = CaptionAgreement(pairs.texts, pairs.image_index)
        if params["loss"] == "hinge":
            statistic = hinge_statistic(params["margin"])
        else:
            statistic = info_nce_statistic(params["temperature"])
        fns = {"loss": statistic, "cost": hinge_statistic(params["margin"]), "cosine": cosine_statistic}
        posteriors, predictions, similarities = [], [], []
        for k in range(2):
            heads = state.modules[f"m{k}.image"], state.modules[f"m{k}.text"]
            measured = reference_statistics(*heads, pairs, state.reference, fns, device=self.device_)
            posteriors.append(state.splits[f"m{k}"].posterior(-measured["loss"], agreement))
            top = state.scalars["top"][k]
            predictions.append(correspondence_from_cost(measured["cost"], params["margin"], top))
            similarities.append(measured["cosine"])
        p_clean = np.mean(posteriors, axis=0).astype(np.float32)
        clean = p_clean > state.scalars["clean_threshold"]
        own, mean = (torch.from_numpy(p) for p in (predictions[0], np.mean(predictions, axis=0)))
        labels = rectify(torch.from_numpy(p_clean), own, mean, torch.from_numpy(clean))
        soft_label = labels.clamp(0, 1).numpy().astype(np.float32)
        return PairScores.without_rematch(p_clean, soft_label, np.mean(similarities, axis=0))

    def _heads(self) -> Heads:
        modules = self.state_.modules
        return AveragedHeads(
            [TorchHeads(modules[f"m{k}.image"], modules[f"m{k}.text"], self.device_) for k in range(2)]
        )

    @staticmethod
    def _training_loss(
        peer: HeadTrainer, posterior: np.ndarray, clean: np.ndarray, params: dict[str, Any]
    ) -> Callable[[Batch], torch.Tensor]:
        posterior_t = torch.from_numpy(posterior)
        clean_t = torch.from_numpy(clean)
        margin = params["margin"]

        def loss(batch: Batch) -> torch.Tensor:
            with torch.no_grad():
                own = predict_correspondence(batch.scores.detach(), margin, batch.same_image)
                other = predict_correspondence(peer.batch_scores(batch.index), margin, batch.same_image)
                labels = rectify(batch.take(posterior_t), own, (own + other) / 2, batch.take(clean_t).bool())
            if params["loss"] == "hinge":
                margins = soft_margin(labels, margin, params["soft_margin"])
                return hinge_triplet(batch.scores, margins, hardest=True, same_image=batch.same_image)
            return soft_info_nce(batch.scores, labels, params["temperature"], batch.same_image)

        return loss

    @staticmethod
    def _final_labels(
        models: list[HeadTrainer], p_clean: np.ndarray, clean: np.ndarray, params: dict[str, Any]
    ) -> np.ndarray:
        margin = params["margin"]
        predictions = [
            m.pair_statistic(lambda b: predict_correspondence(b.scores, margin, b.same_image)) for m in models
        ]
        own, mean = (torch.from_numpy(p) for p in (predictions[0], np.mean(predictions, axis=0)))
        labels = rectify(torch.from_numpy(p_clean), own, mean, torch.from_numpy(clean))
        return labels.clamp(0, 1).numpy().astype(np.float32)
