"""Caption agreement: evidence from the other captions of the same image.

Corpora such as Flickr and COCO give each image several captions. A wrong caption is
unlike its image's right ones, while right captions paraphrase each other; a trainer that
splits clean from noisy pairs on its own loss alone leaves this evidence unused. The other
captions are themselves doubtful, so each one counts with the clean posterior the split
gave it last time: under complete noise (an image's whole caption set moved) the moved
captions agree with each other, but their low posteriors silence them.

Each caption's agreement counts relative to that of its image's other captions, so that an
image whose captions all paraphrase each other (easy scenes) or none do (busy ones) does
not move its pairs as a block. The agreement is measured in the text encoder's own space,
which no training has fitted to the noise. Where an image has one caption (the usual web
corpus) the confidence is zero and the split statistic is left as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from cleanpairs.contract import Param
from cleanpairs.errors import ParameterError

if TYPE_CHECKING:  # scikit-learn and scipy load with the mixture, not with the declarations
    from cleanpairs.core.mixture import PosteriorMap


def agreement_param(default: float = 1.0) -> Param:
    """The ``agreement`` hyperparameter, worded once for every method that splits with it."""
    return Param(
        float,
        default,
        "weight of caption agreement in the split: how a caption agrees with its image's other "
        "captions, each weighted by its clean posterior (0: the method's own statistic alone)",
        low=0,
    )


class CaptionAgreement:
    """Posterior-weighted agreement of each caption with the other captions of its image.

    Parameters
    ----------
    texts
        ``(n, d)`` caption embeddings of the corpus's pairs, any scale.
    image_index
        ``(n,)`` each pair's image.
    """

    def __init__(self, texts: np.ndarray, image_index: np.ndarray) -> None:
        norms = np.linalg.norm(texts, axis=1, keepdims=True)
        self.texts = (texts / np.maximum(norms, 1e-12)).astype(np.float32)
        self.image_index = np.asarray(image_index)
        self.n_images = int(self.image_index.max()) + 1 if len(self.image_index) else 0

    def measure(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each caption's mean cosine with its image's other captions, weighted by ``weights``.

        Returns
        -------
        agreement
            ``(n,)`` float32 weighted mean cosine (0 where the other captions weigh nothing).
        confidence
            ``(n,)`` float32 total weight of the other captions, capped at 1.
        """
        w = np.asarray(weights, dtype=np.float32)
        sums = np.zeros((self.n_images, self.texts.shape[1]), np.float32)
        np.add.at(sums, self.image_index, self.texts * w[:, None])
        totals = np.bincount(self.image_index, weights=w, minlength=self.n_images)
        others = sums[self.image_index] - self.texts * w[:, None]
        weight = np.maximum(totals[self.image_index] - w, 0.0)
        agreement = np.einsum("ij,ij->i", self.texts, others) / np.maximum(weight, 1e-6)
        return agreement.astype(np.float32), np.minimum(weight, 1.0).astype(np.float32)

    def _others_mean(self, values: np.ndarray) -> np.ndarray:
        """For each pair, the mean of ``values`` over the other pairs of its image (0 if none)."""
        sums = np.bincount(self.image_index, weights=values, minlength=self.n_images)
        counts = np.bincount(self.image_index, minlength=self.n_images)
        others = counts[self.image_index] - 1
        return (sums[self.image_index] - values) / np.maximum(others, 1)

    def split(
        self, cleanness: np.ndarray, posterior_of: Callable[[np.ndarray], np.ndarray], weight: float
    ) -> np.ndarray:
        """A method's clean posterior with the agreement taken into account.

        ``posterior_of`` is the method's own split (its mixture over a statistic, higher is
        cleaner). It runs once on ``cleanness``; its posterior weighs the other captions and
        sides the pairs for :meth:`combine`, and it runs again on the combined statistic.
        With ``weight`` 0 the method's split is returned untouched.
        """
        posterior = posterior_of(cleanness)
        if weight == 0:
            return posterior
        return posterior_of(self.combine(cleanness, posterior, weight))

    def fit_split(
        self,
        cleanness: np.ndarray,
        fit: Callable[[np.ndarray], tuple[np.ndarray, PosteriorMap]],
        weight: float,
    ) -> tuple[np.ndarray, AgreementSplit]:
        """:meth:`split`, keeping what it fitted so that other pairs can be split the same way.

        ``fit`` is the method's split that also returns its :class:`PosteriorMap` (a map of
        ``cleanness``). Returns the posterior :meth:`split` gives and the :class:`AgreementSplit`.
        """
        posterior, first = fit(cleanness)
        return self.refit(cleanness, posterior, first, fit, weight)

    def refit(
        self,
        cleanness: np.ndarray,
        posterior: np.ndarray,
        first: PosteriorMap,
        fit: Callable[[np.ndarray], tuple[np.ndarray, PosteriorMap]],
        weight: float,
    ) -> tuple[np.ndarray, AgreementSplit]:
        """The second half of :meth:`fit_split`, for a method whose first split is fitted another
        way than its second (``mscn`` starts the first from its meta data): ``posterior`` and
        ``first`` are that split of ``cleanness``; ``fit`` splits the combined statistic."""
        if weight == 0:
            return posterior, AgreementSplit(first, None, None, 0.0)
        cleanness = np.asarray(cleanness, dtype=np.float64)
        agreement, confidence = self.relative(posterior)
        combination = _combination(cleanness, posterior, agreement, confidence)
        posterior, second = fit(_combined(cleanness, agreement, confidence, weight, combination))
        return posterior, AgreementSplit(first, second, combination, weight)

    def relative(self, posterior: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each caption's agreement (:meth:`measure`, weighted by ``posterior``) less the mean of its
        image's other captions', and its confidence."""
        agreement, confidence = self.measure(posterior)
        return agreement - self._others_mean(agreement), confidence

    def combine(self, cleanness: np.ndarray, posterior: np.ndarray | None, weight: float) -> np.ndarray:
        """A split statistic (higher is cleaner) with the agreement added as far as it separates.

        The two pieces of evidence are summed the way Fisher's discriminant sums independent
        features: each scaled by how far apart its means lie in the current split (``posterior``
        weighting each pair's side), over its within-side variance. So agreement counts for
        much where wrong captions disagree with their image's others (shuffled captions) and
        for little where they do not (a whole caption set moved together), without being told
        which noise the corpus has. The agreement is judged on the pairs whose other captions
        weigh at least 0.5, and enters in proportion to that weight; ``weight`` scales it.
        With no ``posterior`` yet (the first split), ``weight`` 0, or no image with two
        captions, the statistic is returned as it was.
        """
        cleanness = np.asarray(cleanness, dtype=np.float64)
        if posterior is None or weight == 0:
            return cleanness
        agreement, confidence = self.relative(posterior)
        combination = _combination(cleanness, posterior, agreement, confidence)
        return _combined(cleanness, agreement, confidence, weight, combination)


def of_cleanness(
    fit_of_losses: Callable[[np.ndarray], tuple[np.ndarray, PosteriorMap]],
) -> Callable[[np.ndarray], tuple[np.ndarray, PosteriorMap]]:
    """A method's split of its losses as the split of ``cleanness = -loss`` that
    :meth:`CaptionAgreement.fit_split` takes: the same posterior, the map turned to ``-loss``."""

    def fit(cleanness: np.ndarray) -> tuple[np.ndarray, PosteriorMap]:
        posterior, mapping = fit_of_losses(-np.asarray(cleanness))
        return posterior, mapping.negated()

    return fit


Combination = tuple[float, float, float, float]
"""Fisher's slope and midpoint of the method's statistic, then of the relative agreement."""


def _combination(
    cleanness: np.ndarray, posterior: np.ndarray, agreement: np.ndarray, confidence: np.ndarray
) -> Combination | None:
    """How :meth:`CaptionAgreement.combine` weighs the two statistics, from the split ``posterior``;
    ``None`` when either has no discriminant."""
    p = np.clip(np.asarray(posterior, dtype=np.float64), 0.0, 1.0)
    judged = confidence >= 0.5
    own = _discriminant(cleanness, p)
    other = _discriminant(agreement[judged], p[judged])
    if own is None or other is None:
        return None
    return (*own, *other)


def _combined(
    cleanness: np.ndarray,
    agreement: np.ndarray,
    confidence: np.ndarray,
    weight: float,
    combination: Combination | None,
) -> np.ndarray:
    if combination is None:
        return cleanness
    own_slope, own_middle, slope, middle = combination
    evidence = weight * confidence * max(slope, 0.0) * (agreement - middle)
    return own_slope * (cleanness - own_middle) + evidence


@dataclass(frozen=True, eq=False)
class AgreementSplit:
    """A method's fitted split, with caption agreement where the method uses it.

    ``first`` maps the method's statistic to the posterior that weighs the other captions;
    with agreement (``second`` set), the statistic combined as at fit time (the kept
    ``combination``: Fisher's slopes and midpoints of the fit sample) maps through ``second``.
    Pairs are split one by one, except that a caption's agreement is measured among the other
    captions of its image given in the same call.
    """

    first: PosteriorMap
    second: PosteriorMap | None
    combination: Combination | None
    weight: float
    carry: np.ndarray | None = None
    """Knots of :func:`~cleanpairs.core.mixture.quantile_knots` that carry the statistic of pairs
    the fit did not train on onto the fit statistic's scale before the split (:meth:`carried`),
    or ``None``: the statistic is taken as it comes."""

    @classmethod
    def plain(cls, mapping: PosteriorMap) -> AgreementSplit:
        """A method's split without agreement: ``mapping`` alone."""
        return cls(mapping, None, None, 0.0)

    def carried(self, unseen: np.ndarray) -> AgreementSplit:
        """This split for pairs scored like ``unseen``: the statistic of pairs the fit did not
        train on (held out from it), carried quantile by quantile onto the distribution the
        split was fitted on.

        Networks score the pairs they trained on as cleaner than pairs they never saw, so the
        fit's mixture, fitted on the former, would call too many unseen pairs noisy. A held-out
        sample of the same corpus has the same share of noise, so its ``q``-quantile is taken to
        mean what the fit's ``q``-quantile meant. The map is monotone: it changes no ranking
        among unseen pairs, only where they fall on the fit's posterior.
        """
        from cleanpairs.core.mixture import MAX_KNOTS

        unseen = np.asarray(unseen, dtype=np.float64).ravel()
        unseen = unseen[np.isfinite(unseen)]
        if self.first.mixture == "none" or len(unseen) < 2:
            return replace(self, carry=None)
        q = np.linspace(0.0, 1.0, min(MAX_KNOTS, len(unseen)))
        source, where = np.unique(np.quantile(unseen, q), return_inverse=True)
        target = np.bincount(where, weights=self.first.fit_quantiles(q)) / np.bincount(where)
        return replace(self, carry=np.stack([source, target]))

    def posterior(self, cleanness: np.ndarray, agreement: CaptionAgreement | None = None) -> np.ndarray:
        """The clean posterior of pairs with statistic ``cleanness`` whose captions ``agreement``
        holds (needed only where the split uses agreement)."""
        if self.carry is not None:
            cleanness = np.interp(np.asarray(cleanness, dtype=np.float64), self.carry[0], self.carry[1])
        posterior = self.first.posterior(cleanness)
        if self.second is None:
            return posterior
        if agreement is None:
            raise ValueError("this split weighs caption agreement; pass the pairs' CaptionAgreement")
        relative, confidence = agreement.relative(posterior)
        combined = _combined(
            np.asarray(cleanness, dtype=np.float64), relative, confidence, self.weight, self.combination
        )
        return self.second.posterior(combined)

    def to_params(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The split as plain data: JSON-able settings and named arrays."""
        settings: dict[str, Any] = {"weight": self.weight, "combination": self.combination}
        arrays: dict[str, np.ndarray] = {}
        if self.carry is not None:
            settings["carried"] = True
            arrays["carry"] = self.carry
        for name, mapping in (("first", self.first), ("second", self.second)):
            if mapping is None:
                settings[name] = None
                continue
            settings[name], parts = mapping.to_params()
            arrays.update({f"{name}.{k}": v for k, v in parts.items()})
        return settings, arrays

    @classmethod
    def from_params(cls, settings: dict[str, Any], arrays: dict[str, np.ndarray]) -> AgreementSplit:
        """Rebuild a split from :meth:`to_params`' output (``ParameterError`` when malformed)."""
        from cleanpairs.core.mixture import PosteriorMap

        try:
            maps = {
                name: None
                if settings[name] is None
                else PosteriorMap.from_params(
                    settings[name],
                    {k[len(name) + 1 :]: v for k, v in arrays.items() if k.startswith(name + ".")},
                )
                for name in ("first", "second")
            }
            combination = settings["combination"]
            if combination is not None:
                combination = tuple(float(v) for v in combination)
                if len(combination) != 4:
                    raise ParameterError("a fitted split's combination must hold 4 numbers")
            first = maps["first"]
            if first is None:
                raise ParameterError("a fitted split lacks its first map")
            carry = None
            if settings.get("carried", False):
                carry = np.asarray(arrays["carry"], dtype=np.float64)
                if carry.ndim != 2 or carry.shape[0] != 2 or not np.isfinite(carry).all():
                    raise ParameterError(f"a fitted split's carry has shape {carry.shape}; expected (2, k)")
            return cls(first, maps["second"], combination, float(settings["weight"]), carry)
        except KeyError as err:
            raise ParameterError(f"a fitted split lacks {err.args[0]!r}") from None


def _discriminant(x: np.ndarray, p: np.ndarray) -> tuple[float, float] | None:
    """Fisher's slope ``(mean_clean - mean_noisy) / within-side variance`` and the midpoint of
    the two means, each pair counting ``p`` towards the clean side; ``None`` when a side or
    the spread is empty."""
    clean, noisy = p.sum(), (1 - p).sum()
    if len(x) < 2 or clean < 1 or noisy < 1:
        return None
    x = np.asarray(x, dtype=np.float64)
    mean_clean = float((p * x).sum() / clean)
    mean_noisy = float(((1 - p) * x).sum() / noisy)
    variance = float((p * (x - mean_clean) ** 2 + (1 - p) * (x - mean_noisy) ** 2).sum() / len(x))
    if variance <= 1e-12:
        return None
    return (mean_clean - mean_noisy) / variance, (mean_clean + mean_noisy) / 2


def image_share(statistic: np.ndarray, image_index: np.ndarray) -> float | None:
    """The share of the statistic's variance that lies between images (ANOVA intraclass
    correlation, ICC(1), with the mean image size of unbalanced groups).

    About 0 when pairs are clean or noisy one by one, about 1 when all captions of an image
    are. ``None`` when no image has two captions (nothing to compare within an image).
    """
    x = np.asarray(statistic, dtype=np.float64)
    _, groups = np.unique(image_index, return_inverse=True)
    sizes = np.bincount(groups).astype(np.float64)
    n, k = len(x), len(sizes)
    if k < 2 or n - k < 1:
        return None
    sums = np.bincount(groups, weights=x)
    within = float(((x - (sums / sizes)[groups]) ** 2).sum()) / (n - k)
    between = float((sums**2 / sizes).sum() - x.sum() ** 2 / n) / (k - 1)
    size = (n - (sizes**2).sum() / n) / (k - 1)
    denominator = between + (size - 1) * within
    return float((between - within) / denominator) if denominator > 0 else 0.0
