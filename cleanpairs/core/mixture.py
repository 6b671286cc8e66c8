"""Two-component mixtures that turn a per-pair statistic into a clean posterior."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import stats
from sklearn.isotonic import isotonic_regression
from sklearn.mixture import GaussianMixture

from cleanpairs.errors import ParameterError


def gmm_clean_posterior(
    values: np.ndarray,
    *,
    seed: int = 0,
    higher_is_clean: bool = True,
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-4,
) -> np.ndarray:
    """Posterior of the clean component of a two-component Gaussian mixture over ``values``.

    The values are scaled to [0, 1] first (as NCR does with per-pair losses). The clean
    component is the one with the larger mean when ``higher_is_clean`` (similarities), the
    smaller mean otherwise (losses). Values with no spread carry no evidence of noise: every
    pair then gets posterior 1. ``max_iter``, ``tol`` and ``reg_covar`` go to scikit-learn's
    ``GaussianMixture`` (NCR fits with 10, 1e-2 and 5e-4).

    Returns
    -------
    numpy.ndarray
        float32, one posterior in [0, 1] per value.
    """
    return fit_gmm_split(
        values, seed=seed, higher_is_clean=higher_is_clean, max_iter=max_iter, tol=tol, reg_covar=reg_covar
    )[0]


def fit_gmm_split(
    values: np.ndarray,
    *,
    seed: int = 0,
    higher_is_clean: bool = True,
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-4,
) -> tuple[np.ndarray, PosteriorMap]:
    """:func:`gmm_clean_posterior` and the fitted map that gives other values their posterior.

    Returns
    -------
    tuple
        The float32 posterior of ``values`` and the :class:`PosteriorMap` of the split.
    """
    x = np.asarray(values, dtype=np.float64)
    span = np.ptp(x) if len(x) else 0.0
    if len(x) < 2 or span <= 1e-12:
        return np.ones(len(x), dtype=np.float32), PosteriorMap.constant()
    low = float(x.min())
    x = ((x - low) / span).reshape(-1, 1)
    gmm = GaussianMixture(
        n_components=2, max_iter=max_iter, tol=tol, reg_covar=reg_covar, random_state=seed
    )
    gmm.fit(x)
    means = gmm.means_.ravel()
    clean = int(np.argmax(means) if higher_is_clean else np.argmin(means))
    posterior = gmm.predict_proba(x)[:, clean]
    components = {
        "means": means.astype(np.float64),
        "variances": gmm.covariances_.reshape(2).astype(np.float64),
        "weights": gmm.weights_.astype(np.float64),
    }
    return _ranked_split(
        posterior, x.ravel(), "gaussian", components, clean, higher_is_clean, low=low, span=float(span)
    )


def mixture_separation(values: np.ndarray, *, seed: int = 0) -> float:
    """How well a two-component Gaussian mixture of ``values`` tells its components apart: the
    AUROC its two Gaussians imply, ``Phi(|mu_1 - mu_2| / sqrt(var_1 + var_2))``, in [0.5, 1].

    The mixture is the one the methods split with (:func:`fit_gmm_split`). Needs no truth, so it
    can compare fits on pairs whose truth is unknown (a held-out sample): the better a statistic
    separates clean pairs from noisy ones, the further apart the mixture puts its components.
    Values with no spread separate nothing (0.5); values that are not finite are left out.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    split = fit_gmm_split(x[np.isfinite(x)], seed=seed)[1]
    if split.mixture != "gaussian":
        return 0.5
    means, variances = split.components["means"], split.components["variances"]
    return float(stats.norm.cdf(abs(means[1] - means[0]) / np.sqrt(variances.sum())))


RANK_SHARE = 1e-2
"""How far :func:`ranked_posterior` may move a posterior to order the pairs it saturates."""


def ranked_posterior(
    posterior: np.ndarray, statistic: np.ndarray, *, higher_is_clean: bool, share: float = RANK_SHARE
) -> np.ndarray:
    """A mixture's clean posterior, made to rank pairs as the statistic it was fitted on does.

    Two things keep a raw posterior from ranking like its statistic. Components of unequal
    spread (and a beta component's pole at 0 or 1) make it rise again in a far tail, so a pair
    can score above one that looks cleaner. And far from the boundary it saturates: thousands of
    pairs read exactly 1 (or 0) in float32, and their order, which users sort by, is lost. The
    posterior is therefore fitted by isotonic regression to be non-decreasing in cleanness
    (pool-adjacent-violators: a tail that rises against the rest is averaged into it, not
    allowed to drag the rest along), then ``share`` of it is given to the statistic's rank, which
    moves no posterior by more than ``share`` and orders every pair the statistic orders.

    Returns
    -------
    numpy.ndarray
        float32 in [0, 1], one per pair, in the order given.
    """
    p = np.asarray(posterior, dtype=np.float64).ravel()
    if len(p) < 2:
        return p.astype(np.float32)
    fitted, rank = _ranked_parts(p, statistic, higher_is_clean)
    return _blend(fitted, rank, share)


def _ranked_parts(
    posterior: np.ndarray, statistic: np.ndarray, higher_is_clean: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The isotonic fit of ``posterior`` in cleanness and each value's rank share, in input order."""
    p = np.asarray(posterior, dtype=np.float64).ravel()
    cleanness = np.asarray(statistic, dtype=np.float64).ravel()
    if not higher_is_clean:
        cleanness = -cleanness
    order = np.argsort(cleanness, kind="stable")
    fitted = np.empty_like(p)
    fitted[order] = isotonic_regression(p[order], y_min=0.0, y_max=1.0, increasing=True)
    rank = (stats.rankdata(cleanness, method="average") - 1) / (len(p) - 1)
    return fitted, rank


def _blend(fitted: np.ndarray, rank: np.ndarray, share: float) -> np.ndarray:
    return np.clip((1 - share) * fitted + share * rank, 0.0, 1.0).astype(np.float32)


MAX_KNOTS = 4096
"""Most statistic values a :class:`PosteriorMap` keeps of its fit sample (a quantile sketch beyond)."""


@dataclass(frozen=True, eq=False)
class PosteriorMap:
    """A fitted split, kept so that values the mixture was not fitted on get their posterior.

    A value ``v`` is scaled as the fit sample was (``x = (sign * v - low) / span``, clipped to
    ``[clip, 1 - clip]`` for a beta mixture), given the mixture's clean posterior from the kept
    component parameters, held between the isotonic posteriors of the two fit values around it
    (``knots``, ``levels``: the monotone fit of :func:`ranked_posterior`, so a tail that rose
    against the rest at fit time stays pooled), and given ``share`` of its rank among the fit
    values, interpolated between the knots' ranks (``ranks``). On a fit value this is exactly the
    posterior the fit gave it (up to ties pooled at a knot, or a fit sample larger than
    :data:`MAX_KNOTS`, whose knots are then its quantiles). Values outside the fit sample's range
    take the end knot's posterior. Every value is mapped on its own: no other value of a call
    changes it.

    Attributes
    ----------
    mixture : str
        ``"gaussian"``, ``"beta"``, or ``"none"`` (the fit sample had no spread: posterior 1).
    components : dict of numpy.ndarray
        ``means``, ``variances``, ``weights`` (Gaussian) or ``alphas``, ``betas``, ``weights``
        (beta), each shape (2,).
    clean : int
        The clean component.
    """

    mixture: str
    components: dict[str, np.ndarray]
    clean: int
    higher_is_clean: bool
    low: float
    span: float
    clip: float
    sign: float
    knots: np.ndarray
    levels: np.ndarray
    ranks: np.ndarray
    share: float = RANK_SHARE

    @classmethod
    def constant(cls) -> PosteriorMap:
        """The split of a statistic without spread: every value is clean."""
        empty = np.zeros(0)
        return cls("none", {}, 0, True, 0.0, 1.0, 0.0, 1.0, empty, empty, empty)

    def negated(self) -> PosteriorMap:
        """This map as a function of ``-v``: for a split fitted on a loss and applied to its negative."""
        return replace(self, sign=-self.sign)

    def scaled(self, values: np.ndarray) -> np.ndarray:
        """``values`` on the axis the mixture was fitted on."""
        x = (self.sign * np.asarray(values, dtype=np.float64).ravel() - self.low) / self.span
        return np.clip(x, self.clip, 1 - self.clip) if self.clip > 0 else x

    def raw_posterior(self, x: np.ndarray) -> np.ndarray:
        """The mixture's clean posterior of scaled values ``x``, before the isotonic hold."""
        if self.mixture == "beta":
            c = self.components
            return BetaMixture(c["alphas"], c["betas"], c["weights"]).posterior(x)[:, self.clean]
        c = self.components
        with np.errstate(divide="ignore"):
            logl = (
                np.log(c["weights"])
                - 0.5 * np.log(2 * np.pi * c["variances"])
                - (x.reshape(-1, 1) - c["means"]) ** 2 / (2 * c["variances"])
            )
        return _responsibilities(logl)[:, self.clean]

    def posterior(self, values: np.ndarray) -> np.ndarray:
        """The clean posterior of each value, float32 in [0, 1]."""
        x = self.scaled(values)
        if self.mixture == "none":
            return np.ones(len(x), dtype=np.float32)
        last = len(self.knots) - 1
        left = np.clip(np.searchsorted(self.knots, x, side="right") - 1, 0, last)
        right = np.clip(np.searchsorted(self.knots, x, side="left"), 0, last)
        low = np.minimum(self.levels[left], self.levels[right])
        high = np.maximum(self.levels[left], self.levels[right])
        held = np.clip(self.raw_posterior(x), low, high)
        return _blend(held, np.interp(x, self.knots, self.ranks), self.share)

    def fit_quantiles(self, q: np.ndarray) -> np.ndarray:
        """The ``q``-quantiles of the statistic the map was fitted on, on the statistic's own axis
        (from the kept knots and their rank shares; a beta mixture's clip holds the far tails at
        the clip). Empty for a map fitted on values without spread."""
        if self.mixture == "none":
            return np.zeros(0)
        values = self.sign * (self.knots * self.span + self.low)
        # Ranks count in cleanness; the statistic's order is the scaled axis's, flipped by sign.
        rank = self.ranks if self.higher_is_clean else 1.0 - self.ranks
        rank = rank if self.sign > 0 else 1.0 - rank
        order = np.argsort(values, kind="stable")
        return np.interp(np.asarray(q, np.float64), rank[order], values[order])

    def to_params(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The map as plain data: JSON-able settings (the mixture's parameters among them) and the
        knots as named float64 arrays."""
        settings = {
            "mixture": self.mixture,
            "components": {k: [float(x) for x in v] for k, v in self.components.items()},
            "clean": self.clean,
            "higher_is_clean": self.higher_is_clean,
            "low": self.low,
            "span": self.span,
            "clip": self.clip,
            "sign": self.sign,
            "share": self.share,
        }
        return settings, {"knots": self.knots, "levels": self.levels, "ranks": self.ranks}

    @classmethod
    def from_params(cls, settings: dict[str, Any], arrays: dict[str, np.ndarray]) -> PosteriorMap:
        """Rebuild a map from :meth:`to_params`' output.

        Raises
        ------
        ParameterError
            A setting or array is missing or malformed.
        """
        names = {
            "none": (),
            "gaussian": ("means", "variances", "weights"),
            "beta": ("alphas", "betas", "weights"),
        }
        try:
            mixture = str(settings["mixture"])
            if mixture not in names:
                raise ParameterError(f"unknown mixture {mixture!r}")
            components = {k: _float_array(settings["components"][k], (2,)) for k in names[mixture]}
            knots = _float_array(arrays["knots"])
            levels, ranks = (_float_array(arrays[k], knots.shape) for k in ("levels", "ranks"))
            if mixture != "none" and (len(knots) == 0 or np.any(np.diff(knots) <= 0)):
                raise ParameterError("knots must be increasing")
            return cls(
                mixture,
                components,
                int(settings["clean"]),
                bool(settings["higher_is_clean"]),
                float(settings["low"]),
                float(settings["span"]),
                float(settings["clip"]),
                float(settings["sign"]),
                knots,
                levels,
                ranks,
                float(settings["share"]),
            )
        except KeyError as err:
            raise ParameterError(f"a fitted split lacks {err.args[0]!r}") from None


def _float_array(value: Any, shape: tuple[int, ...] | None = None) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 1 or (shape is not None and arr.shape != shape) or not np.isfinite(arr).all():
        expected = shape or "(k,)"
        raise ParameterError(f"a fitted split's array has shape {arr.shape}; expected {expected}, all finite")
    return arr


def _ranked_split(
    posterior: np.ndarray,
    x: np.ndarray,
    mixture: str,
    components: dict[str, np.ndarray],
    clean: int,
    higher_is_clean: bool,
    *,
    low: float,
    span: float,
    clip: float = 0.0,
) -> tuple[np.ndarray, PosteriorMap]:
    """:func:`ranked_posterior` of a mixture's raw ``posterior`` over scaled values ``x``, and its map."""
    fitted, rank = _ranked_parts(posterior, x, higher_is_clean)
    knots, where, counts = np.unique(x, return_inverse=True, return_counts=True)
    # Tied values share a rank; the isotonic fit may still split a tie between two pools.
    levels = np.bincount(where, weights=fitted) / counts
    ranks = np.bincount(where, weights=rank) / counts
    if len(knots) > MAX_KNOTS:
        keep = np.unique(np.linspace(0, len(knots) - 1, MAX_KNOTS).round().astype(np.int64))
        knots, levels, ranks = knots[keep], levels[keep], ranks[keep]
    mapping = PosteriorMap(
        mixture, components, clean, higher_is_clean, low, span, clip, 1.0, knots, levels, ranks
    )
    return _blend(fitted, rank, RANK_SHARE), mapping


@dataclass(frozen=True, eq=False)
class BetaMixture:
    """A two-component beta mixture on (0, 1).

    Equality is identity (``eq=False``): element-wise array comparison has no single truth value.

    Attributes
    ----------
    alphas, betas : numpy.ndarray
        Shape (2,), the positive shape parameters of each component.
    weights : numpy.ndarray
        Shape (2,), the mixing weights, summing to 1.
    """

    alphas: np.ndarray
    betas: np.ndarray
    weights: np.ndarray

    def __post_init__(self) -> None:
        for name in ("alphas", "betas", "weights"):
            arr = np.asarray(getattr(self, name), dtype=np.float64)
            if arr.shape != (2,) or not np.isfinite(arr).all():
                raise ParameterError(f"{name} must be 2 finite numbers, got {getattr(self, name)!r}")
            object.__setattr__(self, name, arr)
        if (self.alphas <= 0).any() or (self.betas <= 0).any():
            raise ParameterError("alphas and betas must be positive")
        if (self.weights < 0).any() or self.weights.sum() <= 0:
            raise ParameterError("weights must be non-negative and not all zero")

    def means(self) -> np.ndarray:
        """Mean of each component, ``alpha / (alpha + beta)``, shape (2,)."""
        return self.alphas / (self.alphas + self.betas)

    def likelihoods(self, x: np.ndarray) -> np.ndarray:
        """Weighted densities ``weight_k * Beta(x; alpha_k, beta_k)``, shape (n, 2)."""
        x = np.asarray(x, dtype=np.float64).reshape(-1, 1)
        return self.weights * stats.beta.pdf(x, self.alphas, self.betas)

    def _log_likelihoods(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64).reshape(-1, 1)
        with np.errstate(divide="ignore"):
            return np.log(self.weights) + stats.beta.logpdf(x, self.alphas, self.betas)

    def posterior(self, x: np.ndarray) -> np.ndarray:
        """Responsibility of each component for each value, shape (n, 2), rows summing to 1.

        Worked in the log domain so that densities which both underflow still compare. A value
        neither component can produce (both densities 0, e.g. outside (0, 1)) is split equally;
        one at a pole (density +inf) goes to the component(s) with the pole.
        """
        return _responsibilities(self._log_likelihoods(x))

    @classmethod
    def fit(
        cls, values: np.ndarray, *, max_iter: int = 20, tol: float = 1e-4, eps: float = 1e-4
    ) -> BetaMixture:
        """Fit by EM with a weighted method-of-moments M-step (Arazo et al., 2019).

        Parameters
        ----------
        values : numpy.ndarray
            1-D values in [0, 1]; clipped to ``[eps, 1 - eps]`` so that no density is 0 or infinite.
        max_iter : int
            Most EM iterations.
        tol : float
            Stop once the mean log-likelihood per value changes by less than this.
        eps : float
            Clipping margin, in (0, 0.5).

        Returns
        -------
        BetaMixture
            Component 0 starts on the lower values, component 1 on the higher ones
            (:func:`_starting_responsibilities`); EM may reorder them, so pick a component by
            :meth:`means`.
        """
        x = np.asarray(values, dtype=np.float64).ravel()
        if len(x) < 2 or not np.isfinite(x).all():
            raise ParameterError(f"need at least 2 finite values to fit a mixture, got {len(x)}")
        if max_iter < 1:
            raise ParameterError(f"max_iter must be at least 1, got {max_iter}")
        if tol < 0:
            raise ParameterError(f"tol must be non-negative, got {tol}")
        if not 0 < eps < 0.5:
            raise ParameterError(f"eps must be within (0, 0.5), got {eps}")
        x = np.clip(x, eps, 1 - eps)
        model = cls._m_step(x, _starting_responsibilities(x))
        prev = -np.inf
        for _ in range(max_iter):
            logl = model._log_likelihoods(x)
            ll = float(np.mean(_logsumexp_rows(logl)))
            if abs(ll - prev) < tol:
                break
            prev = ll
            model = cls._m_step(x, _responsibilities(logl))
        return model

    @classmethod
    def _m_step(cls, x: np.ndarray, resp: np.ndarray) -> BetaMixture:
        # A component that has lost all its values would make the weighted moments 0/0.
        w = resp + 1e-12
        mass = w.sum(axis=0)
        m = (w * x[:, None]).sum(axis=0) / mass
        v = (w * (x[:, None] - m) ** 2).sum(axis=0) / mass
        # The moment equations need 0 < v < m(1 - m); outside that alpha or beta turns non-positive.
        v = np.clip(v, 1e-12, m * (1 - m) * (1 - 1e-6))
        alphas = m * (m * (1 - m) / v - 1)
        betas = alphas * (1 - m) / m
        return cls(alphas=alphas, betas=betas, weights=mass / mass.sum())


def _starting_responsibilities(x: np.ndarray) -> np.ndarray:
    """Where EM starts: a two-component Gaussian mixture's responsibilities, lower component first.

    The beta mixture's likelihood is flat along the weights, so a few EM steps stay close to
    their start: a split at the median (tried first) kept every fit near half clean, half noisy,
    whatever the noise (RCAR's loss at 20% and 80% noise: weights 0.50 / 0.50 both). A Gaussian
    mixture's split follows the data and is deterministic (fixed seed); where it is degenerate
    (one component empty) the median split stands in.
    """
    gmm = GaussianMixture(n_components=2, max_iter=100, tol=1e-3, reg_covar=1e-4, random_state=0)
    resp = gmm.fit(x.reshape(-1, 1)).predict_proba(x.reshape(-1, 1))
    resp = resp[:, np.argsort(gmm.means_.ravel())]
    if (resp.sum(axis=0) < 1).any():
        upper = x > np.median(x)
        if not upper.any():
            upper = x >= np.median(x)
        resp = np.column_stack([~upper, upper]).astype(np.float64)
    return resp


def _logsumexp_rows(logl: np.ndarray) -> np.ndarray:
    top = logl.max(axis=1)
    safe = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return safe + np.log(np.exp(logl - safe[:, None]).sum(axis=1))


def _responsibilities(logl: np.ndarray) -> np.ndarray:
    top = logl.max(axis=1, keepdims=True)
    finite = np.isfinite(top).ravel()
    resp = np.full(logl.shape, 0.5)
    r = np.exp(logl[finite] - top[finite])
    resp[finite] = r / r.sum(axis=1, keepdims=True)
    pole = np.isposinf(top).ravel()
    hits = np.isposinf(logl[pole]).astype(np.float64)
    resp[pole] = hits / hits.sum(axis=1, keepdims=True)
    return resp


def bmm_clean_posterior(
    values: np.ndarray, *, higher_is_clean: bool = True, max_iter: int = 20
) -> np.ndarray:
    """Posterior of the clean component of a two-component beta mixture over ``values``.

    The beta-mixture counterpart of :func:`gmm_clean_posterior` (as MSCN, L2RM and RCAR use):
    values are min-max scaled to [0, 1], the clean component is the one with the larger mean when
    ``higher_is_clean`` and the smaller mean otherwise, and fewer than 2 values or values with no
    spread give posterior 1 everywhere.

    Parameters
    ----------
    values : numpy.ndarray
        1-D finite per-pair statistic (a similarity or a loss).
    higher_is_clean : bool
        Whether larger values mean a clean pair.
    max_iter : int
        Most EM iterations.

    Returns
    -------
    numpy.ndarray
        float32, one posterior in [0, 1] per value.
    """
    return fit_bmm_split(values, higher_is_clean=higher_is_clean, max_iter=max_iter)[0]


def fit_bmm_split(
    values: np.ndarray, *, higher_is_clean: bool = True, max_iter: int = 20
) -> tuple[np.ndarray, PosteriorMap]:
    """:func:`bmm_clean_posterior` and the fitted map that gives other values their posterior."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if not np.isfinite(x).all():
        raise ParameterError("values must be finite")
    span = np.ptp(x) if len(x) else 0.0
    if len(x) < 2 or span <= 1e-12:
        return np.ones(len(x), dtype=np.float32), PosteriorMap.constant()
    eps = 1e-4
    low = float(x.min())
    x = np.clip((x - low) / span, eps, 1 - eps)
    bmm = BetaMixture.fit(x, max_iter=max_iter, eps=eps)
    means = bmm.means()
    clean = int(np.argmax(means) if higher_is_clean else np.argmin(means))
    return beta_split(bmm, clean, x, higher_is_clean, low=low, span=float(span), clip=eps)


def beta_split(
    bmm: BetaMixture,
    clean: int,
    x: np.ndarray,
    higher_is_clean: bool,
    *,
    low: float = 0.0,
    span: float = 1.0,
    clip: float,
) -> tuple[np.ndarray, PosteriorMap]:
    """The ranked clean posterior of scaled values ``x`` under a fitted beta mixture, and its map.

    ``low``, ``span`` and ``clip`` say how ``x`` was made from the statistic (MSCN's scores are
    already in (0, 1): clipped only)."""
    components = {"alphas": bmm.alphas, "betas": bmm.betas, "weights": bmm.weights}
    posterior = bmm.posterior(x)[:, clean]
    scale = {"low": low, "span": span, "clip": clip}
    return _ranked_split(posterior, x, "beta", components, clean, higher_is_clean, **scale)


def gaussian_split(
    components: dict[str, np.ndarray], clean: int, x: np.ndarray, posterior: np.ndarray, higher_is_clean: bool
) -> tuple[np.ndarray, PosteriorMap]:
    """The ranked clean posterior of values ``x`` under a Gaussian mixture fitted on them as they
    are (no scaling), and its map.

    ``components`` holds the mixture's ``means``, ``variances`` and ``weights``; ``posterior`` is
    its raw clean posterior of ``x`` (MSCN fits its own, started from its meta data)."""
    return _ranked_split(posterior, x, "gaussian", components, clean, higher_is_clean, low=0.0, span=1.0)


def quantile_knots(source: np.ndarray, target: np.ndarray, size: int = MAX_KNOTS) -> np.ndarray:
    """Knots of the monotone map that carries the distribution of ``source`` onto that of ``target``.

    Both are samples of one set of pairs (two statistics of the same pairs); the map sends the
    ``q``-quantile of ``source`` to the ``q``-quantile of ``target``, at up to ``size`` quantiles.

    Returns
    -------
    numpy.ndarray
        ``(2, k)`` float64: increasing source values, and the non-decreasing target values they map to.
    """
    q = np.linspace(0.0, 1.0, min(size, max(len(source), 2)))
    x, y = np.quantile(np.asarray(source, np.float64), q), np.quantile(np.asarray(target, np.float64), q)
    x, where = np.unique(x, return_inverse=True)
    return np.stack([x, np.bincount(where, weights=y) / np.bincount(where)])


def map_quantiles(values: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """``values`` carried through the map of :func:`quantile_knots` (linear between knots, held at
    the ends), float32."""
    return np.interp(np.asarray(values, np.float64), knots[0], knots[1]).astype(np.float32)


def clean_subset(posterior: np.ndarray, threshold: float, minimum: int) -> np.ndarray:
    """Pairs to train on: those whose clean posterior is above ``threshold``, or the ``minimum``
    most clean when fewer pass (a split that calls nearly everything noisy still leaves a batch
    or two to learn from)."""
    chosen = np.flatnonzero(posterior > threshold)
    if len(chosen) >= minimum:
        return chosen
    return np.sort(np.argsort(-posterior, kind="stable")[:minimum])
