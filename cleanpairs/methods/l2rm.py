"""``l2rm``: Learning to Rematch Mismatched Pairs (Han et al., CVPR 2024).

Mismatched pairs are not only set aside: their images and captions are matched to each
other again by optimal transport, and the transport plan becomes their training target.

1. *Warm-up* on all pairs with a robust InfoNCE (:func:`robust_info_nce`: cross-entropy plus
   reverse cross-entropy, which a wrong positive cannot pull far).
2. *Split*, every epoch: each pair's loss, min-max scaled, under a two-component beta
   mixture; the low-loss component is the clean one (:func:`fit_clean_posterior`,
   :func:`split_clean`). Not in the paper: with ``agreement`` (default 1) the mixture runs
   again with each caption's agreement with its image's other captions added
   (:mod:`cleanpairs.core.agreement`, as for ``ncr``; ``agreement=0`` is the paper's split).
3. Every step trains a batch of clean pairs with the usual matching loss and a batch of noisy
   pairs with *rematch targets*:

   - the cost of sending noisy image ``i`` to noisy caption ``j`` is ``1 - s_ij``
     (:func:`transport_cost`);
   - an entropic *partial* transport (:func:`partial_transport`) moves only a fraction
     ``rho`` of the mass, so an image without a fitting caption in the batch keeps its mass;
     the original (mismatched) pairings are forbidden, so no image can go back to the caption
     it came with;
   - the plan, normalised by rows and by columns, gives soft image-to-text and text-to-image
     targets (:func:`rematch_targets`); an image that moves no mass gets a near-uniform
     target, i.e. "no caption of this batch is yours";
   - the noisy loss is the symmetric KL divergence between these targets and the batch's
     softmax matching probabilities, in both directions (:func:`symmetric_kl`).

``cp_p_clean`` is the beta mixture's clean posterior after the last epoch, ``cp_soft_label``
the same posterior (L2RM corrects targets of the noisy batch, not a per-pair label),
``cp_similarity`` the heads' cosine. ``cp_rematch_key`` / ``cp_rematch_score`` come from one
corpus-scale partial transport over the pairs taken as noisy in the trained heads' space
(:func:`cleanpairs.core.rematch.rematch_pairs`).

Pairs the method was not fit on are measured against a fixed sample of the fit corpus (instead of
a fresh sample or a batch) and split by the last epoch's mixture; they are not rematched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from cleanpairs.contract import Heads
from cleanpairs.core.agreement import AgreementSplit, CaptionAgreement, of_cleanness
from cleanpairs.core.heads import TorchHeads
from cleanpairs.core.losses import hinge_triplet, info_nce, matching_probabilities
from cleanpairs.core.mixture import PosteriorMap, fit_bmm_split
from cleanpairs.core.reference import (
    NegativeSample,
    cosine_statistic,
    hinge_statistic,
    info_nce_statistic,
    reference_statistics,
)
from cleanpairs.core.rematch import rematch_in_shared_space
from cleanpairs.core.state import PairState
from cleanpairs.core.training import Batch, HeadConfig, HeadTrainer, lr_at, progress_bar
from cleanpairs.methods import specs
from cleanpairs.methods.base import FittedState, PairEmbeddings, PairScorer, PairScores
from cleanpairs.methods.registry import register

TARGET_FLOOR = 1e-10
"""Plan entries are floored at this (in the plan's units, marginals ``1/b``) before the
targets are normalised, as the official code clips them: a row that moves no mass becomes a
near-uniform target, and the reverse KL stays finite."""


def robust_info_nce(
    scores: torch.Tensor, temperature: float, same_image: torch.Tensor | None = None, eps: float = 1e-7
) -> torch.Tensor:
    """The warm-up loss: InfoNCE plus reverse cross-entropy (RCE) in both directions.

    The reverse term ``-sum_j p_ij log(onehot_ij + eps) = -log(eps) (1 - p_ii)`` is bounded,
    so a mismatched pair costs at most a constant instead of an ever-growing cross-entropy.

    Returns
    -------
    torch.Tensor
        ``(batch,)``: half the sum of the four terms, per pair.
    """
    p_i2t, p_t2i = matching_probabilities(scores, temperature, same_image)
    reverse = -math.log(eps) * ((1 - p_i2t.diag()) + (1 - p_t2i.diag()))
    return info_nce(scores, temperature, same_image) + reverse / 2


def per_pair_hinge(batch: Batch, margin: float) -> torch.Tensor:
    """The paper's split statistic: bidirectional hinge with mean in-batch negatives."""
    return hinge_triplet(batch.scores, margin, hardest=False, same_image=batch.same_image)


def fit_clean_posterior(losses: np.ndarray) -> tuple[np.ndarray, PosteriorMap]:
    """The split: posterior of the low-loss component of a 2-component beta mixture over
    min-max scaled losses (10 EM iterations, as the official ``BMM_pred``), and its fitted
    map (of the losses)."""
    return fit_bmm_split(losses, higher_is_clean=False, max_iter=10)


def split_clean(posterior: np.ndarray, threshold: float) -> np.ndarray:
    """Pairs taken as clean (posterior above ``threshold``).

    When no pair would be noisy, the least clean 1% are set aside anyway; when fewer than two
    would be clean, the cleaner half is kept, so that both batches can always be drawn.
    """
    clean = posterior > threshold
    if clean.all():
        clean = posterior > np.sort(posterior)[len(posterior) // 100]
    if clean.sum() < 2:
        clean = posterior >= np.median(posterior)
    return clean


def transport_cost(scores: torch.Tensor) -> torch.Tensor:
    """Cost of sending image ``i`` to caption ``j``: ``1 - s_ij``.

    The paper learns this map (a ``b x b`` linear layer on the similarity rows, started at
    ``1 - s``); with its learning rate of 2e-6 it stays at its start, so the start is kept.
    """
    return 1 - scores


def partial_transport(
    cost: torch.Tensor,
    forbidden: torch.Tensor,
    *,
    rho: float,
    reg: float,
    max_iter: int = 2000,
    tol: float = 1e-5,
) -> torch.Tensor:
    """Entropic partial optimal transport between uniform marginals (Sinkhorn).

    Rows and columns each hold ``1/b`` (``b`` rows, ``b'`` columns); only ``rho`` of the total
    moves. As in the paper, a dummy column absorbs what each row keeps and a dummy row
    supplies what each column does not receive (``1 - rho`` each); the dummy-to-dummy entry
    and every ``forbidden`` entry are closed (their kernel is exactly 0). Entries touching a
    dummy all cost the same, so they only fix how much mass stays and leave the choice of
    partners to ``cost``. Costs are shifted to start at 0 and the kernel is kept in float64,
    so ``exp(-cost / reg)`` does not underflow for costs within ``600 * reg`` of the cheapest
    (``1 - cosine`` spans at most 2). Iterates until the rows' marginals are within ``tol``
    of their share (relative, summed), checked every 10 sweeps.

    Returns
    -------
    torch.Tensor
        The log of the ``(b, b')`` plan (``-inf`` on forbidden entries), float64.
    """
    rows, cols = cost.shape
    c = cost.detach().to(torch.float64)
    open_ = ~forbidden
    c = c - c[open_].min() if open_.any() else c
    log_kernel = torch.zeros(rows + 1, cols + 1, dtype=torch.float64, device=cost.device)
    log_kernel[:rows, :cols] = (-c / reg).masked_fill(forbidden, -math.inf)
    log_kernel[rows, cols] = -math.inf
    kernel = log_kernel.exp()
    a = torch.full((rows + 1,), 1 / rows, dtype=torch.float64, device=cost.device)
    b = torch.full((cols + 1,), 1 / cols, dtype=torch.float64, device=cost.device)
    a[rows] = b[cols] = max(1 - rho, 1e-12)
    v = torch.ones_like(b)
    for sweep in range(max_iter):
        u = a / (kernel @ v)
        v = b / (kernel.T @ u)
        if sweep % 10 == 9 and float((u * (kernel @ v) - a).abs().sum()) < tol * float(a.sum()):
            break
    log_plan = log_kernel + u.log()[:, None] + v.log()[None, :]
    return log_plan[:rows, :cols]


def rematch_targets(log_plan: torch.Tensor, floor: float = TARGET_FLOOR) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft image-to-text and text-to-image targets: the plan floored, then normalised by rows
    and by columns.

    Returns ``(y_i2t, y_t2i)``, both with rows summing to 1; row ``i`` of ``y_t2i`` is caption
    ``i``'s target over the batch's images.
    """
    plan = log_plan.exp().clamp(min=floor)
    return plan / plan.sum(dim=1, keepdim=True), plan.T / plan.T.sum(dim=1, keepdim=True)


def symmetric_kl(
    scores: torch.Tensor, y_i2t: torch.Tensor, y_t2i: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Half of ``KL(Y || P) + KL(P || Y)`` summed over both directions, one value per row.

    ``P`` is the batch softmax of ``scores / temperature`` (rows: image to text; columns:
    text to image); ``Y`` the rematch targets. The reverse KL keeps the model from spreading
    probability where the plan puts none.

    Returns
    -------
    torch.Tensor
        ``(b,)`` for a square batch: the loss of image ``i``'s row plus caption ``i``'s row.
    """
    total = scores.new_zeros(len(scores))
    for logits, target in ((scores / temperature, y_i2t), (scores.T / temperature, y_t2i)):
        log_p = logits.log_softmax(dim=1)
        log_y = target.to(scores.dtype).log()
        y = target.to(scores.dtype)
        forward = (y * (log_y - log_p)).sum(dim=1)
        backward = (log_p.exp() * (log_p - log_y)).sum(dim=1)
        total = total + (forward + backward) / 2
    return total


def cycle_batches(pool: np.ndarray, size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Endless shuffled batches of ``pool`` (a new order at every pass), as the official code
    restarts the noisy loader whenever it runs out."""
    size = min(size, len(pool))
    while True:
        order = rng.permutation(pool)
        for start in range(0, len(order) - size + 1, size):
            yield order[start : start + size]


def rematch_loss(
    model: HeadTrainer, index: np.ndarray, params: dict[str, Any]
) -> tuple[torch.Tensor, dict[str, float]]:
    """The noisy batch's loss and what its transport did (share of rows that moved mass,
    mass left on forbidden entries)."""
    idx = torch.from_numpy(index).to(model.device)
    batch = model.batch(idx)
    with torch.no_grad():
        log_plan = partial_transport(
            transport_cost(batch.scores), batch.same_image, rho=params["rho"], reg=params["reg"]
        )
        y_i2t, y_t2i = rematch_targets(log_plan)
        plan = log_plan.exp()
        moved = float((plan.sum(dim=1) > 0.5 / len(index)).float().mean())
    loss = symmetric_kl(batch.scores, y_i2t, y_t2i, params["temperature"]).mean()
    return loss, {"moved_rows": moved}


@register
class L2RMScorer(PairScorer):
    """Learning to Rematch: beta-mixture split, clean batches trained as usual, noisy batches
    trained towards a partial transport plan between their images and captions."""

    spec = specs.L2RM

    def _fit(self, pairs: PairEmbeddings, **params: Any) -> PairScores:
        config = HeadConfig.from_params(params)
        warmup, epochs = params["warmup_epochs"], params["epochs"]
        n = len(pairs)
        state = PairState(n)
        rng = np.random.default_rng(self.seed)
        steps = n // min(config.batch_size, n)
        moved: list[float] = []
        agreement = CaptionAgreement(pairs.texts, pairs.image_index)
        with progress_bar(steps * (warmup + epochs), self.name) as bar:
            model = HeadTrainer(pairs, config, seed=self.seed, device=self.device, progress=bar)
            temperature = params["temperature"]
            for epoch in range(warmup):
                model.run_epoch(
                    lambda b: robust_info_nce(b.scores, temperature, b.same_image),
                    lr=lr_at(epoch, config.lr, params["lr_step"]),
                )
                self.epoch_done(epoch, model.heads)
            for epoch in range(epochs):
                posterior = self._fit_split(model, params, agreement)[0]
                state.update(p_clean=posterior)
                clean = split_clean(posterior, params["p_threshold"])
                noisy = np.flatnonzero(~clean)
                noisy_batches = cycle_batches(noisy, config.batch_size, rng) if len(noisy) >= 2 else None
                loss = self._training_loss(model, noisy_batches, params, moved)
                model.run_epoch(
                    loss, np.flatnonzero(clean), lr=lr_at(warmup + epoch, config.lr, params["lr_step"])
                )
                self.epoch_done(warmup + epoch, model.heads)
            p_clean, split = self._fit_split(model, params, agreement)
        self.state_ = FittedState(
            {"image": model.image_head, "text": model.text_head},
            {"p_clean": split},
            NegativeSample.draw(pairs, seed=self.seed),
            scalars={"split_of": "cleanness"},
        )
        soft_label = p_clean.copy()
        state.update(p_clean=p_clean)
        heads = model.heads()
        rematch = self._rematch(pairs, heads, p_clean, params)
        return PairScores(
            p_clean=p_clean.astype(np.float32),
            soft_label=soft_label.astype(np.float32),
            similarity=model.similarity(),
            rematch_index=rematch.index,
            rematch_score=rematch.score,
            heads=heads,
            info={
                "epochs_run": warmup + epochs,
                "history": state.history_summary(),
                "batch_rows_rematched": float(np.mean(moved)) if moved else 0.0,
                "rematch": rematch.info,
            },
        )

    @staticmethod
    def _losses(model: HeadTrainer, params: dict[str, Any]) -> np.ndarray:
        """The split statistic of every pair under the model as it stands."""
        if params["loss"] == "hinge":
            return model.pair_statistic(lambda b: per_pair_hinge(b, params["margin"]))
        return model.corpus_loss(params["temperature"])

    @staticmethod
    def _fit_split(
        model: HeadTrainer, params: dict[str, Any], agreement: CaptionAgreement
    ) -> tuple[np.ndarray, AgreementSplit]:
        """The split of the corpus under the model as it stands, and the fitted split (a
        function of ``-loss``)."""
        losses = L2RMScorer._losses(model, params)
        return agreement.fit_split(-losses, of_cleanness(fit_clean_posterior), params["agreement"])

    def _score_pairs(self, pairs: PairEmbeddings) -> PairScores:
        """Each pair's loss against the fit corpus's sample through the last epoch's mixture."""
        params, state = self.params_, self.state_
        heads = state.modules["image"], state.modules["text"]
        if params["loss"] == "hinge":
            statistic = hinge_statistic(params["margin"])
        else:
            statistic = info_nce_statistic(params["temperature"])
        fns = {"loss": statistic, "cosine": cosine_statistic}
        measured = reference_statistics(*heads, pairs, state.reference, fns, device=self.device_)
        losses, similarity = measured["loss"], measured["cosine"]
        # A scorer saved before the agreement split kept a map of the loss itself.
        if state.scalars.get("split_of") == "cleanness":
            agreement = CaptionAgreement(pairs.texts, pairs.image_index)
            p_clean = state.splits["p_clean"].posterior(-losses, agreement)
        else:
            p_clean = state.splits["p_clean"].posterior(losses)
        return PairScores.without_rematch(p_clean, p_clean, similarity)

    def _heads(self) -> Heads:
        return TorchHeads(self.state_.modules["image"], self.state_.modules["text"], self.device_)

    @staticmethod
    def _training_loss(
        model: HeadTrainer,
        noisy_batches: Iterator[np.ndarray] | None,
        params: dict[str, Any],
        moved: list[float],
    ) -> Callable[[Batch], torch.Tensor]:
        def loss(batch: Batch) -> torch.Tensor:
            if params["loss"] == "hinge":
                clean = hinge_triplet(
                    batch.scores, params["margin"], hardest=True, same_image=batch.same_image
                )
            else:
                clean = info_nce(batch.scores, params["temperature"], batch.same_image)
            if noisy_batches is None or params["noisy_weight"] == 0:
                return clean
            noisy, stats = rematch_loss(model, next(noisy_batches), params)
            moved.append(stats["moved_rows"])
            # run_epoch minimises the mean over the clean batch; the noisy term is added once.
            return clean + params["noisy_weight"] * noisy

        return loss

    @staticmethod
    def _rematch(pairs: PairEmbeddings, heads: Any, p_clean: np.ndarray, params: dict[str, Any]) -> Any:
        return rematch_in_shared_space(
            pairs,
            heads,
            p_clean,
            k=params["rematch_k"],
            mass=params["rematch_mass"],
            threshold=params["p_threshold"],
        )
