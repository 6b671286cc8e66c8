"""``mscn``: Meta Similarity Correction Network (Han et al., CVPR 2023).

A small set of pairs known to be clean (the *meta data*, ``trusted``) teaches a small network
what a matching pair looks like, and that network corrects the similarity the main model
learns with.

- The meta-net (:class:`MetaSimilarityNet`) maps a pair's similarity *features* (the
  element-wise product of its image and text embeddings in the shared space, whose sum is
  their cosine) to a corrected correspondence score in (0, 1).
- It is learned as a binary task on the meta data (:class:`MetaData`): trusted pairs are
  positives, mismatched pairs (a trusted caption with another trusted image) are negatives.
- Bi-level update (:func:`virtual_step`, :func:`meta_update`): every step, the main model
  takes a *virtual* step on the training batch with the meta-net's corrected labels; the
  meta-net is then updated by its binary loss on a meta batch evaluated *through* that virtual
  step, so it learns labels whose effect on the main model makes the meta data come out
  right. The main model then takes its real step with the updated meta-net's labels.
- Purification (:func:`purify`): a two-component mixture over the corpus's corrected scores
  (Gaussians on their logits; the paper's betas on the scores degenerate where the scores pile
  up near 0 and 1), whose components start from fits to the meta data's positives and
  negatives, gives each pair a clean posterior; the main model trains on the pairs taken as
  clean. Before the first purification the meta-net takes ``meta_warmup_steps`` direct steps
  on the meta data, before each later one its readout alone does (:meth:`MSCNScorer._recalibrate`),
  so that it is calibrated to the heads as they are then.
- Co-purification (:class:`Peer`): as the official code, two networks (A and B), each with its
  own meta-net, purify for one another: A's mixture chooses the pairs B trains on, then B's
  chooses A's, so neither trains only on the pairs its own errors called clean.

A warm-up on all pairs comes first; the meta-net learns the meta data directly alongside it.

``cp_p_clean`` is the mean of the two networks' clean posteriors after the last epoch (their
final mixtures fitted to convergence, :data:`EM_CONVERGED`), ``cp_soft_label`` the mean of their
meta-nets' corrected correspondences, ``cp_similarity`` the mean of their heads' cosines. A pair
the method was not fit on gets each network's final corrected score through that network's last
mixture, averaged the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from cleanpairs.contract import Heads
from cleanpairs.core.agreement import AgreementSplit, CaptionAgreement
from cleanpairs.core.heads import AveragedHeads, TorchHeads
from cleanpairs.core.losses import hinge_triplet, info_nce, soft_info_nce
from cleanpairs.core.mixture import PosteriorMap, clean_subset, gaussian_split
from cleanpairs.core.reference import cosine_statistic, reference_statistic
from cleanpairs.core.state import PairState
from cleanpairs.core.training import Batch, HeadConfig, HeadTrainer, lr_at, progress_bar
from cleanpairs.errors import ParameterError
from cleanpairs.methods import specs
from cleanpairs.methods.base import FittedState, PairEmbeddings, PairScorer, PairScores
from cleanpairs.methods.registry import register

SCORE_EPS = 1e-3
"""Corrected scores are clipped to ``[eps, 1 - eps]`` before the mixture (as official)."""

EM_OFFICIAL = {"max_iter": 10, "tol": 1e-2}
"""The official EM budget of a purification in training (pomegranate's ``fit``)."""

EM_CONVERGED = {"max_iter": 200, "tol": 1e-6}
"""The EM budget of the final posterior: to convergence (docs/methods.md, mscn: the official budget
stops half-way from the meta data's start and under-estimates high noise)."""

VARIANCE_FLOOR = 1e-4
"""Smallest variance of a mixture component, on the logit axis (a component of tied scores)."""


class MetaSimilarityNet(nn.Module):
    """The meta-net: similarity features of a pair -> corrected correspondence score in (0, 1).

    The paper's ``Meta_Sim`` (one hidden ReLU layer, sigmoid output) on the similarity vector,
    plus a learned affine term in the cosine itself: the MLP's output layer starts at zero, so
    the net starts as a calibrated cosine and learns a *correction* of it. With only a trusted
    set of a few hundred pairs, a free MLP over the similarity vector ranks pairs worse than the
    cosine it could have used.
    """

    def __init__(self, d_in: int, hidden: int = 64, scale: float = 10.0) -> None:
        super().__init__()
        self.hidden = nn.Linear(d_in, hidden)
        self.out = nn.Linear(hidden, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.scale = nn.Parameter(torch.tensor(scale))
        self.shift = nn.Parameter(torch.tensor(0.0))
        self.norm = math.sqrt(d_in)

    def spec(self) -> dict[str, Any]:
        """Its sizes, to build it again (:meth:`MSCNScorer._build_module`)."""
        return {"kind": "meta", "d_in": self.hidden.in_features, "hidden": self.hidden.out_features}

    def readout(self) -> list[nn.Parameter]:
        """The parameters that read the score off the hidden layer and the cosine (what a
        recalibration moves: 2 + hidden + 1 numbers, too few to overfit the meta data)."""
        return [self.scale, self.shift, self.out.weight, self.out.bias]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        cosine = features.sum(dim=-1) / self.norm
        correction = self.out(F.relu(self.hidden(features))).squeeze(-1)
        return torch.sigmoid(self.scale * cosine + self.shift + correction)


def similarity_features(image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Per-pair similarity vector: the element-wise product of unit embeddings, times ``sqrt(dim)``.

    Its sum is ``sqrt(dim)`` times the cosine; the scale gives it a norm near 1 (like the
    paper's normalised similarity vectors) so that the meta-net's weights need not grow large.
    """
    return image * text * math.sqrt(image.shape[-1])


def adaptive_margin(labels: torch.Tensor, margin: float) -> torch.Tensor:
    """MSCN's ``s_adaptive`` soft margin: ``margin * p^2 / (p^2 + (1 - p)^2)``."""
    p = labels.clamp(1e-6, 1 - 1e-6)
    return margin * p**2 / (p**2 + (1 - p) ** 2)


def corrected_loss(
    scores: torch.Tensor, labels: torch.Tensor, same_image: torch.Tensor, params: dict[str, Any]
) -> torch.Tensor:
    """The main model's per-pair loss with corrected labels (``loss=infonce`` or the paper's hinge)."""
    if params["loss"] == "hinge":
        margins = adaptive_margin(labels, params["margin"])
        return hinge_triplet(scores, margins, hardest=True, same_image=same_image)
    return soft_info_nce(scores, labels, params["temperature"], same_image)


def _named(head: nn.Module) -> dict[str, nn.Parameter]:
    return dict(head.named_parameters())


def virtual_step(
    model: HeadTrainer, loss: torch.Tensor, lr: float
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Fast weights of the heads after one differentiable optimiser step on ``loss``.

    The step is the main optimiser's own (AdamW, using its current moments), written out so
    that the new weights stay functions of whatever ``loss`` depends on (the meta-net's labels).

    Returns
    -------
    tuple of dict
        Parameter name -> fast weight, for the image head and for the text head.
    """
    heads = [_named(model.image_head), _named(model.text_head)]
    flat = [p for named in heads for p in named.values()]
    grads = torch.autograd.grad(loss, flat, create_graph=True, retain_graph=True, allow_unused=True)
    group = model.optimizer.param_groups[0]
    beta1, beta2 = group["betas"]
    eps, decay = group["eps"], group["weight_decay"]
    fast: list[dict[str, torch.Tensor]] = [{}, {}]
    k = 0
    for side, named in enumerate(heads):
        for pname, p in named.items():
            g = grads[k]
            k += 1
            if g is None:
                fast[side][pname] = p
                continue
            state = model.optimizer.state.get(p, {})
            step = float(state.get("step", 0)) + 1
            m = (1 - beta1) * g + (beta1 * state["exp_avg"] if "exp_avg" in state else 0)
            v = (1 - beta2) * g * g + (beta2 * state["exp_avg_sq"] if "exp_avg_sq" in state else 0)
            m_hat, v_hat = m / (1 - beta1**step), v / (1 - beta2**step)
            # eps inside the root too: sqrt has an infinite derivative at 0.
            fast[side][pname] = p * (1 - lr * decay) - lr * m_hat / ((v_hat + eps**2).sqrt() + eps)
    return fast[0], fast[1]


def mismatched_pairs(
    source: PairEmbeddings, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``size`` mismatched pairs of ``source``: a random caption shown with an image not its own.

    Returns
    -------
    tuple of numpy.ndarray
        Rows of ``source.images`` and rows of ``source.texts``.
    """
    captions = rng.integers(0, len(source), size)
    owners = source.image_index[captions]
    # An offset in [1, n_images) moves every negative off its caption's own image.
    images = (owners + rng.integers(1, len(source.images), size)) % len(source.images)
    return images, captions


def meta_update(
    meta_net: MetaSimilarityNet,
    meta_optimizer: torch.optim.Optimizer,
    model: HeadTrainer,
    fast: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]] | None,
    meta_data: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    grad_clip: float,
) -> float:
    """One step of the meta-net on the meta data's binary cross-entropy.

    With ``fast`` weights the meta batch is embedded by the virtually-updated heads, so the
    gradient also flows through the virtual step into the labels the meta-net gave (the
    bi-level update); without, it is a direct step (used during the warm-up).

    Returns
    -------
    float
        The meta loss.
    """
    images, texts, labels = meta_data
    if fast is None:
        with torch.no_grad():
            u, v = model.image_head(images), model.text_head(texts)
    else:
        u = functional_call(model.image_head, fast[0], (images,))
        v = functional_call(model.text_head, fast[1], (texts,))
    out = meta_net(similarity_features(u, v)).clamp(1e-6, 1 - 1e-6)
    loss = F.binary_cross_entropy(out, labels)
    params = list(meta_net.parameters())
    grads = torch.autograd.grad(loss, params)
    meta_optimizer.zero_grad(set_to_none=True)
    for p, g in zip(params, grads, strict=True):
        p.grad = g
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    meta_optimizer.step()
    return float(loss.detach())


@torch.no_grad()
def corrected_scores(
    meta_net: MetaSimilarityNet,
    model: HeadTrainer | tuple[nn.Module, nn.Module],
    images: torch.Tensor,
    texts: torch.Tensor,
    image_index: torch.Tensor,
    *,
    block: int = 8192,
) -> np.ndarray:
    """The meta-net's corrected score of each pair (text ``i`` with image ``image_index[i]``), float32.

    ``model`` is the trainer, or its image and text heads."""
    image_head, text_head = (model.image_head, model.text_head) if isinstance(model, HeadTrainer) else model
    image_head.eval()
    text_head.eval()
    image = image_head(images)
    out = []
    for start in range(0, len(texts), block):
        rows = slice(start, start + block)
        out.append(meta_net(similarity_features(image[image_index[rows]], text_head(texts[rows]))))
    return torch.cat(out).float().cpu().numpy() if out else np.zeros(0, np.float32)


def score_logit(scores: np.ndarray) -> np.ndarray:
    """The logit of corrected scores clipped to ``[eps, 1 - eps]``: the axis the mixture is fitted on."""
    x = np.clip(np.asarray(scores, dtype=np.float64), SCORE_EPS, 1 - SCORE_EPS)
    return np.log(x) - np.log1p(-x)


def _e_step(
    z: np.ndarray, means: np.ndarray, variances: np.ndarray, weights: np.ndarray
) -> tuple[float, np.ndarray]:
    """Mean log-likelihood of ``z`` under the Gaussian mixture, and each component's responsibilities."""
    logl = np.log(weights) - 0.5 * np.log(2 * np.pi * variances) - (z[:, None] - means) ** 2 / (2 * variances)
    top = logl.max(axis=1, keepdims=True)
    resp = np.exp(logl - top)
    total = resp.sum(axis=1, keepdims=True)
    return float(np.mean(top + np.log(total))), resp / total


def purify(
    scores: np.ndarray,
    meta_clean: np.ndarray,
    meta_noisy: np.ndarray,
    *,
    max_iter: int = 10,
    tol: float = 1e-2,
) -> tuple[np.ndarray, PosteriorMap]:
    """Clean posterior of every pair from a two-component mixture over the corrected scores' logits.

    The meta data is the prior, as the paper's: the noisy component starts as a fit to the meta
    negatives' scores, the clean one as a fit to the trusted pairs' scores (equal weights); EM
    then fits the mixture to the corpus (the official settings: 10 iterations, tol 1e-2, scores
    clipped to [1e-3, 1 - 1e-3]). Deviation: the components are Gaussians on the scores' logits,
    not betas on the scores. The meta-net's scores pile up near 0 and 1, where moment-fitted
    beta components turn U-shaped and the noisy one claims the top (docs/methods.md, mscn). The
    posterior ranks pairs as their scores do (:func:`ranked_posterior`).

    Returns
    -------
    tuple
        ``(n,)`` float32 clean posterior, and the fitted map of the scores' logits
        (:func:`score_logit`) that gives other scores theirs.
    """
    z = score_logit(scores)
    starts = [score_logit(meta_noisy), score_logit(meta_clean)]
    means = np.array([s.mean() for s in starts])
    variances = np.array([max(float(s.var()), VARIANCE_FLOOR) for s in starts])
    return _fit_mixture(z, means, variances, np.full(2, 0.5), max_iter=max_iter, tol=tol)


def resplit(
    statistic: np.ndarray, posterior: np.ndarray, *, max_iter: int = 10, tol: float = 1e-2
) -> tuple[np.ndarray, PosteriorMap]:
    """The purification's mixture over another statistic of the same pairs (the corrected scores'
    logit combined with caption agreement), started from the sides ``posterior`` gave them,
    since the meta data has no such statistic to start from."""
    x = np.asarray(statistic, dtype=np.float64)
    side = np.stack([1.0 - np.clip(posterior, 0.0, 1.0), np.clip(posterior, 0.0, 1.0)], axis=1)
    mass = side.sum(axis=0) + 1e-12
    means = (side * x[:, None]).sum(axis=0) / mass
    variances = np.maximum((side * (x[:, None] - means) ** 2).sum(axis=0) / mass, VARIANCE_FLOOR)
    return _fit_mixture(x, means, variances, mass / mass.sum(), max_iter=max_iter, tol=tol)


def _fit_mixture(
    z: np.ndarray, means: np.ndarray, variances: np.ndarray, weights: np.ndarray, *, max_iter: int, tol: float
) -> tuple[np.ndarray, PosteriorMap]:
    """EM of the two Gaussians from their start, and the clean posterior of the higher one."""
    previous = -np.inf
    for _ in range(max_iter):
        ll, resp = _e_step(z, means, variances, weights)
        if abs(ll - previous) < tol:
            break
        previous = ll
        mass = resp.sum(axis=0) + 1e-12
        weights = mass / mass.sum()
        means = (resp * z[:, None]).sum(axis=0) / mass
        variances = np.maximum((resp * (z[:, None] - means) ** 2).sum(axis=0) / mass, VARIANCE_FLOOR)
    _, resp = _e_step(z, means, variances, weights)
    clean = int(np.argmax(means))
    components = {"means": means, "variances": variances, "weights": weights}
    return gaussian_split(components, clean, z, resp[:, clean], higher_is_clean=True)


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


@register
class MSCNScorer(PairScorer):
    """Meta Similarity Correction: a meta-net learned bi-level on trusted pairs corrects the labels."""

    spec = specs.MSCN

    def _fit(self, pairs: PairEmbeddings, **params: Any) -> PairScores:
        trusted = self.trusted
        negatives = pairs if params["meta_negatives"] == "corpus" else trusted
        if len(np.unique(negatives.image_index)) < 2:
            raise ParameterError(
                f"{self.name} builds mismatched meta pairs from the {params['meta_negatives']} images; "
                "they show fewer than 2 distinct images"
            )
        if trusted.texts.shape[1] != pairs.texts.shape[1] or trusted.images.shape[1] != pairs.images.shape[1]:
            raise ParameterError(
                f"{self.name}: the trusted set must be embedded like the corpus; its embeddings have sizes "
                f"{trusted.images.shape[1]}/{trusted.texts.shape[1]}, the corpus's "
                f"{pairs.images.shape[1]}/{pairs.texts.shape[1]}"
            )
        config = HeadConfig.from_params(params)
        warmup, epochs, k = params["warmup_epochs"], params["epochs"], params["networks"]
        n = len(pairs)
        state = PairState(n)
        rng = np.random.default_rng(self.seed)
        steps = max(1, n // min(config.batch_size, n))
        with progress_bar(k * steps * (warmup + epochs), self.name) as bar:
            peers = [Peer.build(pairs, config, params, self.seed + j, self.device, bar) for j in range(k)]
            meta = MetaData(trusted, negatives, peers[0].model.device)
            agreement = CaptionAgreement(pairs.texts, pairs.image_index)

            def averaged() -> AveragedHeads:
                return AveragedHeads([peer.model.heads() for peer in peers])

            subset = None
            for epoch in range(warmup + epochs):
                lr = lr_at(epoch, config.lr, params["lr_step"])
                if epoch < warmup:
                    for peer in peers:
                        # As official, the meta-net learns at the heads' rate in the warm-up.
                        _set_lr(peer.meta_optimizer, lr)
                        peer.model.run_epoch(self._warmup_loss(peer, meta, rng, params), lr=lr)
                    self.epoch_done(epoch, averaged)
                    continue
                p_clean = []
                # Co-purification (official order): network j purifies, its peer trains on the
                # pairs it took as clean; then the peer purifies for the next one.
                for j, purifier in enumerate(peers):
                    learner = peers[(j + 1) % k]
                    # The first purification's meta-net learns in full, later ones recalibrate.
                    _set_lr(purifier.meta_optimizer, lr)
                    _set_lr(purifier.recalibration, lr)
                    first = purifier.meta_optimizer if epoch == warmup else purifier.recalibration
                    self._recalibrate(purifier, first, meta, rng, params, config.batch_size)
                    p_clean.append(self._purify(purifier, meta, rng, agreement, params["agreement"])[0])
                    subset = clean_subset(p_clean[-1], params["p_threshold"], min(n, 2 * config.batch_size))
                    # After the warm-up the meta-net learns at meta_lr.
                    _set_lr(learner.meta_optimizer, lr_at(epoch, params["meta_lr"], params["lr_step"]))
                    learner.model.run_epoch(self._bilevel_loss(learner, meta, rng, lr, params), subset, lr=lr)
                state.update(p_clean=np.mean(p_clean, axis=0))
                self.epoch_done(epoch, averaged)
            final = []
            for peer in peers:
                self._recalibrate(peer, peer.recalibration, meta, rng, params, config.batch_size)
                final.append(self._purify(peer, meta, rng, agreement, params["agreement"], EM_CONVERGED))
            p_clean = np.mean([posterior for posterior, _ in final], axis=0)
            soft_label = np.mean([peer.corpus_scores() for peer in peers], axis=0)
            similarity = np.mean([peer.model.similarity() for peer in peers], axis=0)
        modules: dict[str, nn.Module] = {}
        for j, peer in enumerate(peers):
            modules.update({f"m{j}.image": peer.model.image_head, f"m{j}.text": peer.model.text_head})
            modules[f"m{j}.meta"] = peer.meta_net
        self.state_ = FittedState(
            modules, {f"m{j}": split for j, (_, split) in enumerate(final)}
        )
        state.update(p_clean=p_clean, soft_label=soft_label)
        return PairScores.without_rematch(
            p_clean,
            np.clip(soft_label, 0, 1),
            similarity,
            heads=averaged(),
            info={
                "epochs_run": warmup + epochs,
                "trained_on_last_epoch": n if subset is None else len(subset),
                "history": state.history_summary(),
            },
        )

    @staticmethod
    def _recalibrate(
        peer: Peer,
        optimizer: torch.optim.Optimizer,
        meta: MetaData,
        rng: np.random.Generator,
        params: dict[str, Any],
        batch_size: int,
    ) -> None:
        """Direct steps of ``optimizer``'s meta-net parameters on the meta data with the heads as
        they are now, before a purification.

        The heads move a lot in an epoch on the purified pairs (at 80% noise the clean pairs'
        cosine went from 0.17 to 0.50); a meta-net left at the small bi-level rate extrapolates
        to scores piled at 0 and 1 (the correction of a clean pair grew from 0.8 to 14)."""
        for _ in range(params["meta_warmup_steps"]):
            meta_data = meta.batch(batch_size, rng)
            meta_update(peer.meta_net, optimizer, peer.model, None, meta_data, params["grad_clip"])

    @staticmethod
    def _purify(
        peer: Peer,
        meta: MetaData,
        rng: np.random.Generator,
        agreement: CaptionAgreement,
        weight: float,
        em: dict[str, Any] = EM_OFFICIAL,
    ) -> tuple[np.ndarray, AgreementSplit]:
        """The clean posterior of every pair by ``peer``'s corrected scores, the mixture started
        from the meta data's scores and fitted with the EM budget ``em``, then (``weight`` > 0)
        fitted again with caption agreement added to the scores' logit; and the fitted split."""
        images, texts, labels = meta.batch(2 * len(meta.trusted), rng)
        own = torch.arange(len(texts), device=peer.model.device)
        prior = corrected_scores(peer.meta_net, peer.model, images, texts, own)
        labels_np = labels.cpu().numpy()
        scores = peer.corpus_scores()
        posterior, first = purify(scores, prior[labels_np > 0.5], prior[labels_np < 0.5], **em)
        return agreement.refit(
            score_logit(scores), posterior, first, lambda combined: resplit(combined, posterior, **em), weight
        )

    def _networks(self) -> list[tuple[nn.Module, nn.Module, MetaSimilarityNet, AgreementSplit]]:
        """Each fitted network's image head, text head, meta-net and last purification's split.

        A scorer saved before the two networks (one network, its modules named ``image``,
        ``text`` and ``meta``, its split ``p_clean``) is read as one network, so it still applies.
        """
        modules, splits = self.state_.modules, self.state_.splits
        if "meta" in modules:
            return [(modules["image"], modules["text"], modules["meta"], splits["p_clean"])]
        return [
            (modules[f"m{j}.image"], modules[f"m{j}.text"], modules[f"m{j}.meta"], splits[f"m{j}"])
            for j in range(len(splits))
        ]

    def _score_pairs(self, pairs: PairEmbeddings) -> PairScores:
        """Each network's final corrected score of each pair, through its last purification's
        mixture; the posteriors, scores and cosines averaged over the networks."""

        def tensor(x: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(x).to(self.device_)

        images, texts, owners = tensor(pairs.images), tensor(pairs.texts), tensor(pairs.image_index)
        agreement = CaptionAgreement(pairs.texts, pairs.image_index)
        p_clean, scores, similarity = [], [], []
        for image_head, text_head, meta_net, split in self._networks():
            score = corrected_scores(meta_net, (image_head, text_head), images, texts, owners)
            p_clean.append(split.posterior(score_logit(score), agreement))
            scores.append(score)
            similarity.append(
                reference_statistic(image_head, text_head, pairs, None, cosine_statistic, device=self.device_)
            )
        return PairScores.without_rematch(
            np.mean(p_clean, axis=0), np.clip(np.mean(scores, axis=0), 0, 1), np.mean(similarity, axis=0)
        )

    def _heads(self) -> Heads:
        return AveragedHeads(
            [TorchHeads(image, text, self.device_) for image, text, _, _ in self._networks()]
        )

    @staticmethod
    def _module_spec(module: nn.Module) -> dict[str, Any]:
        if isinstance(module, MetaSimilarityNet):
            return module.spec()
        return PairScorer._module_spec(module)

    @staticmethod
    def _build_module(spec: dict[str, Any]) -> nn.Module:
        if spec["kind"] == "meta":
            return MetaSimilarityNet(int(spec["d_in"]), int(spec["hidden"]))
        return PairScorer._build_module(spec)

    @staticmethod
    def _warmup_loss(
        peer: Peer, meta: MetaData, rng: np.random.Generator, params: dict[str, Any]
    ) -> Callable[[Batch], torch.Tensor]:
        """Warm-up: plain loss on all pairs; the meta-net learns the meta data directly alongside."""

        def loss(batch: Batch) -> torch.Tensor:
            meta_data = meta.batch(len(batch.index), rng)
            meta_update(peer.meta_net, peer.meta_optimizer, peer.model, None, meta_data, params["grad_clip"])
            if params["loss"] == "hinge":
                margin = params["margin"]
                return hinge_triplet(batch.scores, margin, hardest=False, same_image=batch.same_image)
            return info_nce(batch.scores, params["temperature"], batch.same_image)

        return loss

    @staticmethod
    def _bilevel_loss(
        peer: Peer, meta: MetaData, rng: np.random.Generator, lr: float, params: dict[str, Any]
    ) -> Callable[[Batch], torch.Tensor]:
        """The batch loss; before it, a virtual step and a meta update every ``meta_interval`` steps."""
        model, meta_net = peer.model, peer.meta_net
        step = [0]

        def labels_of(batch: Batch) -> torch.Tensor:
            owners = model.image_index[batch.index]
            with torch.no_grad():
                features = similarity_features(
                    model.image_head(model.images[owners]), model.text_head(model.texts[batch.index])
                )
            return meta_net(features)

        def loss(batch: Batch) -> torch.Tensor:
            step[0] += 1
            if step[0] % params["meta_interval"] == 0:
                virtual = corrected_loss(batch.scores, labels_of(batch), batch.same_image, params).mean()
                fast = virtual_step(model, virtual, lr)
                meta_data = meta.batch(len(batch.index), rng)
                meta_update(meta_net, peer.meta_optimizer, model, fast, meta_data, params["grad_clip"])
            with torch.no_grad():
                labels = labels_of(batch)
            return corrected_loss(batch.scores, labels, batch.same_image, params)

        return loss


class MetaData:
    """The meta data on the device: trusted pairs (label 1) and mismatched pairs (label 0).

    Negatives are drawn afresh for every batch from ``negatives`` (the trusted set itself, or
    the corpus as the official code), so the meta-net sees many more of them than the trusted
    set's size.
    """

    def __init__(self, trusted: PairEmbeddings, negatives: PairEmbeddings, device: torch.device) -> None:
        self.trusted, self.negatives = trusted, negatives
        self.tensors = {
            name: (torch.from_numpy(p.images).to(device), torch.from_numpy(p.texts).to(device))
            for name, p in (("trusted", trusted), ("negatives", negatives))
        }
        self.device = device

    def batch(self, size: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Image embeddings, text embeddings and labels of a balanced meta batch of ``size`` pairs."""
        half = max(1, size // 2)
        positives = rng.integers(0, len(self.trusted), half)
        neg_images, neg_texts = mismatched_pairs(self.negatives, half, rng)
        images, texts = self.tensors["trusted"]
        other_images, other_texts = self.tensors["negatives"]
        labels = torch.cat([torch.ones(half), torch.zeros(half)]).to(self.device)
        pos_images = torch.from_numpy(self.trusted.image_index[positives])
        return (
            torch.cat([images[pos_images], other_images[torch.from_numpy(neg_images)]]),
            torch.cat([texts[torch.from_numpy(positives)], other_texts[torch.from_numpy(neg_texts)]]),
            labels,
        )


@dataclass
class Peer:
    """One of the co-purifying networks: its heads' trainer and its own meta-net, with the
    meta-net's optimiser and the optimiser of its readout alone (:meth:`MSCNScorer._recalibrate`)."""

    model: HeadTrainer
    meta_net: MetaSimilarityNet
    meta_optimizer: torch.optim.Optimizer
    recalibration: torch.optim.Optimizer

    @classmethod
    def build(
        cls,
        pairs: PairEmbeddings,
        config: HeadConfig,
        params: dict[str, Any],
        seed: int,
        device: Any,
        progress: Any,
    ) -> Peer:
        """A fresh network (heads seeded by ``seed``) and meta-net."""
        model = HeadTrainer(pairs, config, seed=seed, device=device, progress=progress)
        dim = model.image_head.shortcut.out_features
        meta_net = MetaSimilarityNet(dim, params["meta_hidden"]).to(model.device)
        return cls(
            model,
            meta_net,
            torch.optim.Adam(meta_net.parameters(), lr=params["meta_lr"]),
            torch.optim.Adam(meta_net.readout(), lr=config.lr),
        )

    def corpus_scores(self) -> np.ndarray:
        """The meta-net's corrected score of every pair of the corpus the network trains on."""
        model = self.model
        return corrected_scores(self.meta_net, model, model.images, model.texts, model.image_index)
