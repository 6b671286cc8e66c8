"""``robust``: NCR and CRCL fit side by side, weighted per corpus by the kind of noise it shows.

Not a paper's method: a combination of two of them, the project's default (issue #18). No
single paper method is good under every kind of noise (docs/benchmarks.md): ``ncr`` ranks
shuffled and near-miss captions best but calls a third of the pairs of whole mislabelled
images clean (complete noise 40%: AUROC 0.897), where ``crcl``'s restarts forget what the heads
memorised (0.960) but rank shuffled and near-miss captions worse.

1. Both components are fit on the corpus with their own defaults (:meth:`RobustScorer._fit_components`).
2. Each one's clean posterior is read as its log-odds (:func:`log_odds`): the posteriors rank
   as their statistics do (docs/methods.md, "Posteriors that rank"), and the log-odds keep
   their two modes apart for the final mixture.
3. The kind of noise is read off the corpus without the truth (:func:`image_share`): where
   whole images carry wrong captions, the pairs' cleanness is shared by the captions of an
   image (an intraclass correlation near 1); where single captions are wrong, it is not
   (near 0, whatever the rate). The combined statistic leans on ``crcl`` as that share rises
   (:func:`crcl_weight`, :func:`combine`), and each caption's statistic is joined by its
   image's other captions', added where the noise is image-level and a little taken away where
   it is caption-level (:func:`image_coefficient`).
4. One Gaussian mixture over the combined statistic gives ``cp_p_clean``, ranked like it
   (:func:`cleanpairs.core.mixture.fit_gmm_split`).

Unseen pairs (:meth:`RobustScorer.score_pairs`) are scored by both fitted components, combined
with the fit's weight (the image term among the other captions of their image in the same call)
and mapped by the fit's mixture.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from cleanpairs.contract import Heads
from cleanpairs.core.agreement import AgreementSplit, image_share
from cleanpairs.core.mixture import fit_gmm_split
from cleanpairs.errors import InputError
from cleanpairs.methods import specs
from cleanpairs.methods.base import FittedState, PairEmbeddings, PairScorer, PairScores
from cleanpairs.methods.registry import get_method, register

COMPONENTS = ("ncr", "crcl")
"""The combined methods: the one that leads under caption-level noise, then the one that leads
under image-level noise."""


LOG_ODDS_CLIP = 1e-7
"""Posteriors are held this far from 0 and 1 before their log-odds are taken (float32 resolves
about 6e-8 near 1, so only exact 0s and 1s and their nearest neighbours are moved)."""


def log_odds(posterior: np.ndarray) -> np.ndarray:
    """``log(p / (1 - p))`` of a clean posterior, float64: it orders pairs as the posterior does,
    and keeps its two modes apart (ranks would flatten them into one uniform spread)."""
    p = np.clip(np.asarray(posterior, dtype=np.float64), LOG_ODDS_CLIP, 1 - LOG_ODDS_CLIP)
    return np.log(p) - np.log1p(-p)


def crcl_weight(share: float | None, low: float, high: float) -> float:
    """How much the combined statistic follows ``crcl``: 0 below ``low`` image share, 1 above
    ``high``, linear between; 0 when the share cannot be measured (one caption per image, where
    image-level noise is caption-level noise)."""
    if share is None:
        return 0.0
    if high <= low:
        return float(share >= high)
    return float(np.clip((share - low) / (high - low), 0.0, 1.0))


def combine(ncr: np.ndarray, crcl: np.ndarray, weight: float) -> np.ndarray:
    """The components' values averaged with ``weight`` on crcl's (on log-odds: a weighted
    geometric pooling of their odds)."""
    return (1.0 - weight) * np.asarray(ncr) + weight * np.asarray(crcl)


def others_mean(values: np.ndarray, image_index: np.ndarray) -> np.ndarray:
    """Each pair's mean of ``values`` over the other captions of its image (its own value where
    it is its image's only caption)."""
    x = np.asarray(values, dtype=np.float64)
    _, groups = np.unique(image_index, return_inverse=True)
    sizes = np.bincount(groups)[groups]
    others = np.bincount(groups, weights=x)[groups] - x
    return np.where(sizes > 1, others / np.maximum(sizes - 1, 1), x)


def image_coefficient(weight: float, pooling: float, centring: float) -> float:
    """How much of the mean over an image's other captions joins a caption's statistic: as far as
    the noise is image-level (``weight``), its siblings share its fate and are evidence for it
    (``+pooling``); as far as it is caption-level, how well an image's captions match at all (a
    generic photo, a crowded one) is a level shared by them that says nothing of which one is
    wrong, and a little of it is taken away (``-centring``)."""
    return weight * pooling - (1.0 - weight) * centring


def with_image_term(cleanness: np.ndarray, image_index: np.ndarray, coefficient: float) -> np.ndarray:
    """``cleanness`` plus ``coefficient`` times its mean over the image's other captions."""
    return np.asarray(cleanness, dtype=np.float64) + coefficient * others_mean(cleanness, image_index)


def component_params(params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each component's parameters: its defaults, with those ``robust`` forwards (0: keep)."""
    ncr: dict[str, Any] = {"epochs": params["ncr_epochs"]}
    crcl: dict[str, Any] = {"stages": params["crcl_stages"]}
    for name in ("batch_size", "dim"):
        if params[name]:
            ncr[name] = crcl[name] = params[name]
    return {"ncr": ncr, "crcl": crcl}


@register
class RobustScorer(PairScorer):
    """NCR and CRCL combined by rank, weighted by how much of the noise is shared within images."""

    spec = specs.ROBUST

    def _fit(self, pairs: PairEmbeddings, **params: Any) -> PairScores:
        self.components_ = self._fit_components(pairs, params)
        found = {name: scorer.score() for name, scorer in self.components_.items()}
        odds = {name: log_odds(scores.p_clean) for name, scores in found.items()}
        share = image_share(odds["ncr"] + odds["crcl"], pairs.image_index)
        weight = crcl_weight(share, params["share_low"], params["share_high"])
        cleanness = self._combined(odds, weight, pairs.image_index)
        p_clean, mapping = fit_gmm_split(cleanness, seed=self.seed, higher_is_clean=True)
        self.state_ = FittedState(
            {},
            {"p_clean": AgreementSplit.plain(mapping)},
            scalars={"crcl_weight": weight, "image_share": share},
        )
        return PairScores.without_rematch(
            p_clean,
            self._mix(weight, found, "soft_label"),
            self._mix(weight, found, "similarity"),
            heads=self._leading(weight, found).heads,
            info={
                "epochs_run": sum(s.info["epochs_run"] for s in found.values()),
                "crcl_weight": weight,
                "image_share": share,
            },
        )

    def _fit_components(self, pairs: PairEmbeddings, params: dict[str, Any]) -> dict[str, PairScorer]:
        """Both components fit on ``pairs`` with this run's seed; their epochs shown one after
        the other to ``on_epoch``."""
        fitted: dict[str, PairScorer] = {}
        offset = 0
        for name, values in component_params(params).items():
            watch = self._watcher(offset)
            scorer = get_method(name)(
                seed=self.seed, device=self.device, threads=self.threads, on_epoch=watch, **values
            )
            fitted[name] = scorer.fit(pairs)
            offset += fitted[name].score().info["epochs_run"]
        return fitted

    def _watcher(self, offset: int) -> Callable[[int, Heads], None] | None:
        """A component's ``on_epoch``: this run's, its epochs counted after ``offset`` earlier ones."""
        watch = self.on_epoch
        if watch is None:
            return None
        return lambda epoch, heads: watch(offset + epoch, self._encoder_heads(heads))

    def _combined(self, odds: dict[str, np.ndarray], weight: float, image_index: np.ndarray) -> np.ndarray:
        """The combined statistic: the log-odds pooled, then joined by the image's other captions
        as the kind of noise says (:func:`image_coefficient`)."""
        pooled = combine(odds["ncr"], odds["crcl"], weight)
        params = self.params_
        coefficient = image_coefficient(weight, params["image_pooling"], params["image_centring"])
        return with_image_term(pooled, image_index, coefficient)

    @staticmethod
    def _mix(weight: float, found: dict[str, PairScores], field: str) -> np.ndarray:
        ncr, crcl = (getattr(found[name], field) for name in COMPONENTS)
        return combine(ncr, crcl, weight).astype(np.float32)

    @staticmethod
    def _leading(weight: float, found: dict[str, Any]) -> Any:
        """The component the combined statistic follows most (ncr on a tie)."""
        return found["crcl" if weight > 0.5 else "ncr"]

    def _score_pairs(self, pairs: PairEmbeddings) -> PairScores:
        """Both components' posteriors, combined with the fit's weight and mapped by the fit's mixture."""
        state = self.state_
        weight = float(state.scalars["crcl_weight"])
        found = {name: scorer.score_pairs(pairs) for name, scorer in self.components_.items()}
        odds = {name: log_odds(scores.p_clean) for name, scores in found.items()}
        cleanness = self._combined(odds, weight, pairs.image_index)
        p_clean = state.splits["p_clean"].posterior(cleanness)
        return PairScores.without_rematch(
            p_clean, self._mix(weight, found, "soft_label"), self._mix(weight, found, "similarity")
        )

    def _heads(self) -> Heads | None:
        weight = float(self.state_.scalars["crcl_weight"])
        return self._leading(weight, self.components_)._heads()

    def calibrate(self, held_out: PairEmbeddings) -> PairScorer:
        """Calibrate each component on the held-out pairs, then carry the combination's own
        mixture onto their combined statistic (:meth:`PairScorer.calibrate`)."""
        for scorer in self.components_.values():
            scorer.calibrate(self._in_fit_space(held_out))
        return super().calibrate(held_out)

    def fitted_state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The combination's own state (its mixture, quantile maps and weight) with each
        component's fitted state nested under ``components``."""
        manifest, tensors = super().fitted_state()
        manifest["components"] = {}
        for name, scorer in self.components_.items():
            manifest["components"][name], parts = scorer.fitted_state()
            tensors.update({f"components.{name}.{key}": value for key, value in parts.items()})
        return manifest, tensors

    @classmethod
    def from_fitted_state(
        cls, manifest: dict[str, Any], tensors: dict[str, Any], *, device: str = "auto"
    ) -> PairScorer:
        """A robust scorer rebuilt with its components from :meth:`fitted_state`'s output."""
        scorer = super().from_fitted_state(manifest, tensors, device=device)
        nested = manifest.get("components")
        if not isinstance(nested, dict) or sorted(nested) != sorted(COMPONENTS):
            raise InputError(f"the fitted {cls.name} scorer cannot be rebuilt: lacks 'components'")
        components = {}
        for name in COMPONENTS:
            prefix = f"components.{name}."
            parts = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            components[name] = get_method(name).from_fitted_state(nested[name], parts, device=device)
        scorer.components_ = components
        return scorer
