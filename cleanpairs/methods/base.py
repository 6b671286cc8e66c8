"""The method contract: the :class:`PairScorer` base class every method derives from, and the
:class:`MethodSpec` that declares a method without importing its implementation.

The types it takes and returns live in :mod:`cleanpairs.contract` (below the core) and are
re-exported here. Nothing here imports torch: the CLI checks a method's name and parameters
with this module alone, before any heavy import. A fitted scorer keeps what scoring other pairs
needs in a :class:`FittedState`; :meth:`PairScorer.fitted_state` turns it into plain data (a
JSON-able manifest and named tensors) and :meth:`PairScorer.from_fitted_state` makes a scorer of
it again (those import torch when called).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from cleanpairs.contract import Heads, PairEmbeddings, PairScores, Param
from cleanpairs.errors import InputError, NotFittedError, ParameterError

if TYPE_CHECKING:  # torch and the core's fitted pieces load only when a scorer is fit or rebuilt
    import torch
    from torch import nn

    from cleanpairs.core.agreement import AgreementSplit
    from cleanpairs.core.alignment import CrossMoments
    from cleanpairs.core.reference import NegativeSample

__all__ = [
    "FittedState",
    "Heads",
    "MethodSpec",
    "PairEmbeddings",
    "PairScorer",
    "PairScores",
    "Param",
    "head_params",
]


@dataclass(eq=False)
class FittedState:
    """What a fitted method keeps to score pairs it was not fit on.

    Attributes
    ----------
    modules
        Named trained networks (heads; MSCN's meta-net), on the scorer's device.
    splits
        Named fitted splits: statistic -> clean posterior, with their mixtures' parameters.
    reference
        The fit corpus's sample that statistics against negatives are measured on, if any.
    arrays
        Other named arrays.
    scalars
        Other JSON-able values (numbers the fit measured on its corpus).
    """

    modules: dict[str, nn.Module]
    splits: dict[str, AgreementSplit]
    reference: NegativeSample | None = None
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    scalars: dict[str, Any] = field(default_factory=dict)


def head_params(batch_size: int = 256, batch_doc: str = "pairs per batch") -> dict[str, Param]:
    """The projection heads' training parameters every trainer declares, with one wording."""
    return {
        "lr": Param(float, 1e-3, "AdamW learning rate", low=0, low_open=True),
        "lr_step": Param(int, 0, "divide the learning rate by 10 every this many epochs (0: never)", low=0),
        "batch_size": Param(int, batch_size, batch_doc, low=2),
        "dim": Param(int, 256, "shared embedding size", low=2),
        "hidden": Param(int, 0, "hidden width of each head (0: linear heads)", low=0),
        "grad_clip": Param(float, 2.0, "gradient norm clip (0: none)", low=0),
    }


COMMON_PARAMS: dict[str, Param] = {
    "align": Param(
        str,
        "auto",
        "map both encoders into one space by CCA of the whole corpus's cross-moments before the "
        "method trains (cca); only for a fit on a sample whose noise is caption by caption (auto); "
        "or not (none)",
        choices=("none", "cca", "auto"),
    ),
}
"""Parameters of every method: what the base class does around the method's own fit."""


@dataclass(frozen=True)
class MethodSpec:
    """What a method declares: its registry name, one-line summary, hyperparameters, whether it
    needs a trusted set, and the module whose import registers its :class:`PairScorer`.

    Specs are data (:mod:`cleanpairs.methods.specs`), so names and parameters can be listed and
    checked without importing the method's trainer (and torch).

    Attributes
    ----------
    validate
        An extra check over the checked values (a parameter whose string must parse, say); it
        raises :class:`ParameterError`.
    length_param
        The parameter that sets how long the method trains, which a fit on a sample chooses on
        its held-out pairs (``docs/methods.md``, "Fit on a sample, score the corpus"); a method
        without it has no length to choose.
    """

    name: str
    summary: str
    module: str
    params: Mapping[str, Param] = field(default_factory=dict)
    needs_trusted: bool = False
    validate: Callable[[dict[str, Any]], None] | None = None
    length_param: str = "epochs"

    def __post_init__(self) -> None:
        # Declared once for every method, so that listing and checking a method's parameters
        # shows them like its own.
        object.__setattr__(self, "params", {**self.params, **COMMON_PARAMS})

    def check_params(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Check ``values`` against the declared parameters; return all of them, defaults filled.

        Strings (from the command line) are converted to the declared type first.

        Raises
        ------
        ParameterError
            An unknown name, or a value outside the declared range, with one sentence saying
            what is allowed.
        """
        unknown = sorted(set(values) - set(self.params))
        if unknown:
            known = ", ".join(sorted(self.params)) or "none"
            raise ParameterError(f"{self.name} has no parameter {unknown[0]!r}; its parameters are: {known}")
        checked = {}
        for pname, spec in self.params.items():
            value = spec.coerce(values[pname]) if pname in values else spec.default
            if not spec.accepts(value):
                raise ParameterError(
                    f"The {pname!r} parameter of {self.name} must be {spec.describe()}. "
                    f"Got {values.get(pname, value)!r} instead."
                )
            checked[pname] = float(value) if spec.kind is float else value
        if self.validate is not None:
            self.validate(checked)
        return checked


class PairScorer:
    """Base class of every method: learns on a noisy corpus's embeddings and scores each pair.

    Subclasses set ``spec`` (which fills ``name``, ``summary``, ``params`` and ``needs_trusted``)
    and implement ``_fit``, calling :meth:`epoch_done` after each training epoch. ``__init__``
    only stores keyword-only hyperparameters (and an optional ``on_epoch`` observer, and
    ``threads``: torch's CPU threads while fitting and scoring, by default
    :data:`cleanpairs.device.FIT_THREADS` and :data:`~cleanpairs.device.SCORE_THREADS`); ``fit``
    checks them, learns, and returns self; ``score`` returns the per-pair arrays in input order.
    """

    spec: ClassVar[MethodSpec]
    name: ClassVar[str]
    summary: ClassVar[str]
    params: ClassVar[Mapping[str, Param]] = {}
    needs_trusted: ClassVar[bool] = False
    """True for methods that learn from a small set of pairs known to be clean (MSCN)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # The spec is the one declaration; the class attributes mirror it for the trainers' use.
        spec = cls.__dict__.get("spec")
        if spec is not None:
            cls.name, cls.summary = spec.name, spec.summary
            cls.params, cls.needs_trusted = spec.params, spec.needs_trusted

    def __init__(
        self,
        *,
        seed: int = 0,
        device: str = "auto",
        on_epoch: Callable[[int, Heads], None] | None = None,
        threads: int | None = None,
        **hyperparameters: Any,
    ) -> None:
        self.seed = seed
        self.device = device
        self.threads = threads
        self.on_epoch = on_epoch
        self.hyperparameters = hyperparameters

    def epoch_done(self, epoch: int, heads: Callable[[], Heads]) -> None:
        """Show ``on_epoch`` (when given) the heads as they stand after training epoch ``epoch``.

        ``heads`` is called only when someone watches, so unwatched runs pay nothing. Benchmarks
        use this to follow retrieval quality over the epochs (training stability).
        """
        if self.on_epoch is not None:
            self.on_epoch(epoch, self._encoder_heads(heads()))

    @classmethod
    def check_params(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        """Check ``values`` against the method's spec (:meth:`MethodSpec.check_params`)."""
        return cls.spec.check_params(values)

    def get_params(self) -> dict[str, Any]:
        """Every hyperparameter's value, defaults filled in (after checking them)."""
        return self.check_params(self.hyperparameters)

    def fit(
        self,
        pairs: PairEmbeddings,
        trusted: PairEmbeddings | None = None,
        *,
        moments: CrossMoments | None = None,
    ) -> PairScorer:
        """Learn on ``pairs`` (the noisy corpus) and keep the per-pair results.

        ``trusted`` holds pairs known to be clean, embedded like ``pairs``; methods with
        ``needs_trusted`` require it, the others ignore it. With ``align=cca`` the pairs are
        first mapped into one space (:mod:`cleanpairs.core.alignment`) fit on ``moments``: the
        cross-moments of the whole corpus when ``pairs`` is a sample of it, by default those of
        ``pairs``. With ``align=auto`` only where ``moments`` are of a larger corpus and the
        noise does not look shared by whole images (:func:`~cleanpairs.core.alignment.aligns_sample`).
        """
        if len(pairs) < 2:
            raise ParameterError(f"{self.name} needs at least 2 scorable pairs; got {len(pairs)}")
        if self.needs_trusted and (trusted is None or len(trusted) < 2):
            raise ParameterError(
                f"{self.name} learns from a trusted set of clean pairs and none was given; "
                "pass one with --meta trusted.parquet, or --meta-keys keys.txt for rows of the corpus itself"
            )
        from cleanpairs.device import FIT_THREADS, cpu_threads, resolve_device

        self.params_ = self.get_params()
        self.device_ = resolve_device(self.device)
        self.sizes_ = {
            "d_image": int(pairs.images.shape[1]),
            "d_text": int(pairs.texts.shape[1]),
            "aligned": bool(pairs.aligned),
            "fit_pairs": len(pairs),
            "fit_images": len(pairs.images),
        }
        self.alignment_, decision = self._alignment(pairs, moments)
        if self.alignment_ is not None:
            pairs, trusted = self.alignment_.apply(pairs), self.alignment_.apply(trusted)
        self.trusted = trusted
        with cpu_threads(self.device_, self.threads or FIT_THREADS):
            self.scores_ = self._fit(pairs, **self.params_)
        self.scores_.heads = self._encoder_heads(self.scores_.heads)
        if decision is not None:
            self.scores_.info["align"] = decision
        return self

    def _alignment(
        self, pairs: PairEmbeddings, moments: CrossMoments | None
    ) -> tuple[Any, dict[str, Any] | None]:
        """The corpus alignment the fit trains in (``None``: the encoders' own spaces) and, for
        ``align=auto``, what it decided and why."""
        align = self.params_["align"]
        if align == "none":
            return None, None
        from cleanpairs.core.alignment import CorpusAlignment, CrossMoments, aligns_sample

        sample = moments is not None and moments.count > len(pairs)
        if align == "auto" and not sample:
            return None, {"aligned": False, "why": "fit on the whole corpus"}
        alignment = CorpusAlignment.fit(moments if moments is not None else CrossMoments.of_pairs(pairs))
        if align == "cca":
            return alignment, None
        aligned, share = aligns_sample(alignment, pairs)
        decision = {"aligned": aligned, "image_share": share}
        return (alignment if aligned else None), decision

    def score(self) -> PairScores:
        """The per-pair scores of the corpus given to ``fit``, in its order."""
        if not hasattr(self, "scores_"):
            if hasattr(self, "state_"):
                raise NotFittedError(
                    f"{type(self).__name__} was rebuilt from a fitted state and holds no fit corpus; "
                    "score pairs with score_pairs()"
                )
            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call fit() first")
        return self.scores_

    def score_pairs(self, pairs: PairEmbeddings) -> PairScores:
        """Score ``pairs`` (any pairs embedded like the fit corpus) with the fitted state.

        Each method computes the statistic it splits on with its final networks and maps it
        through the mixture fitted in ``fit`` (``docs/methods.md``, "Scoring unseen pairs").
        A pair's scores do not depend on the other pairs of the call, except where the method
        measures a caption against the other captions of its image (``image_index``).
        ``rematch_index`` is -1 throughout: rematching across shards is a step of its own.

        Raises
        ------
        NotFittedError
            The scorer was neither fitted nor rebuilt from a fitted state.
        ParameterError
            The embeddings' sizes are not those the scorer was fit on.
        """
        if not hasattr(self, "state_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call fit() first")
        expected = (self.sizes_["d_image"], self.sizes_["d_text"])
        if (pairs.images.shape[1], pairs.texts.shape[1]) != expected:
            raise ParameterError(
                f"{self.name} was fit on {expected[0]}-d images and {expected[1]}-d texts; "
                f"these pairs have {pairs.images.shape[1]}-d and {pairs.texts.shape[1]}-d"
            )
        if len(pairs) == 0:
            empty = np.zeros(0, np.float32)
            return PairScores.without_rematch(empty, empty, empty, heads=self._encoder_heads(self._heads()))
        from cleanpairs.device import SCORE_THREADS, cpu_threads

        with cpu_threads(self.device_, self.threads or SCORE_THREADS):
            scores = self._score_pairs(self._in_fit_space(pairs))
        scores.heads = self._encoder_heads(self._heads())
        return scores

    def _in_fit_space(self, pairs: PairEmbeddings) -> PairEmbeddings:
        """``pairs`` as the method was fit on them: through the corpus alignment, if any."""
        alignment = getattr(self, "alignment_", None)
        return pairs if alignment is None else alignment.apply(pairs)

    def _encoder_heads(self, heads: Heads | None) -> Heads | None:
        """``heads`` (in the space the method was fit in) made to take encoder embeddings."""
        alignment = getattr(self, "alignment_", None)
        if alignment is None:
            return heads
        from cleanpairs.core.alignment import AlignedHeads

        return AlignedHeads(alignment, heads)

    def calibrate(self, held_out: PairEmbeddings) -> PairScorer:
        """Carry the scorer's splits onto pairs it was not fit on; return self.

        ``held_out`` is a sample of the corpus the fit sample was drawn from, none of them fit
        on. Each split's statistic is measured on them exactly as :meth:`score_pairs` measures
        it, and the split is :meth:`~cleanpairs.core.agreement.AgreementSplit.carried` onto
        it: afterwards :meth:`score_pairs` places an unseen pair where a fit pair of the same
        quantile sat, instead of reading the mixture of trained-on statistics (on which the
        networks score their own pairs cleaner) as if it held for every pair. :meth:`score`
        is unchanged. A scorer fit on the whole corpus has nothing to calibrate on and is left
        as it is (``docs/methods.md``, "Fit on a sample, score the corpus").

        Raises
        ------
        NotFittedError
            The scorer was neither fitted nor rebuilt from a fitted state.
        """
        taps = self._tapped(held_out)
        self.state_.splits = {name: tap.carried() for name, tap in taps.items()}
        return self

    def held_out_separation(self, held_out: PairEmbeddings) -> float:
        """How well the fitted networks separate pairs they were not fit on, without their truth.

        Each split's statistic is measured on ``held_out`` as :meth:`calibrate` measures it, and
        :func:`~cleanpairs.core.mixture.mixture_separation` (the AUROC a two-Gaussian mixture of
        it implies) is averaged over the splits. It compares fits of one method on one sample
        (training lengths, ``docs/methods.md``, "Fit on a sample, score the corpus"); it is not
        an estimate of the AUROC itself. The scorer is left as it was.

        Raises
        ------
        NotFittedError
            The scorer was neither fitted nor rebuilt from a fitted state.
        """
        from cleanpairs.core.mixture import mixture_separation

        statistics = [np.concatenate(tap.seen) for tap in self._tapped(held_out).values() if tap.seen]
        measured = [mixture_separation(values, seed=self.seed) for values in statistics]
        return float(np.mean(measured)) if measured else 0.5

    def _tapped(self, held_out: PairEmbeddings) -> dict[str, _StatisticTap]:
        """Score ``held_out`` with the splits as fitted (no earlier calibration), each split
        replaced by a tap that keeps the statistic it is handed; the splits are put back."""
        if not hasattr(self, "state_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call fit() first")
        state: FittedState = self.state_
        fitted = state.splits
        splits = {name: split.carried(np.zeros(0)) for name, split in fitted.items()}
        taps = {name: _StatisticTap(split) for name, split in splits.items()}
        # Each method hands its splits the statistic as it measures it for unseen pairs; taking
        # it there measures it the same way for every method, without a second copy of that code.
        state.splits = taps  # type: ignore[assignment]
        try:
            self.score_pairs(held_out)
        finally:
            state.splits = fitted
        return taps

    def fitted_state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """The fitted scorer as plain data: a JSON-able manifest and named CPU tensors.

        The manifest holds the method's name, parameters and seed, the fit corpus's sizes, how
        each network is built, each split's mixture parameters and settings, and other scalars;
        the tensors hold the networks' weights (``modules.NAME.PARAM``), the splits' isotonic
        knots (``splits.NAME.*``), the reference sample (``reference.*``) and other arrays
        (``arrays.*``).
        """
        import torch

        if not hasattr(self, "state_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call fit() first")
        state: FittedState = self.state_
        tensors: dict[str, torch.Tensor] = {}

        def put(prefix: str, arrays: dict[str, Any]) -> None:
            for key, value in arrays.items():
                if not isinstance(value, torch.Tensor):
                    value = torch.from_numpy(np.ascontiguousarray(value))
                tensors[f"{prefix}.{key}"] = value.detach().cpu().clone()

        for name, module in state.modules.items():
            put(f"modules.{name}", module.state_dict())
        splits = {}
        for name, split in state.splits.items():
            splits[name], arrays = split.to_params()
            put(f"splits.{name}", arrays)
        if state.reference is not None:
            put("reference", state.reference.to_arrays())
        put("arrays", state.arrays)
        alignment = getattr(self, "alignment_", None)
        if alignment is not None:
            put("alignment", alignment.to_arrays())
        manifest = {
            "method": self.name,
            "params": dict(self.params_),
            "seed": self.seed,
            "sizes": dict(self.sizes_),
            "modules": {name: self._module_spec(module) for name, module in state.modules.items()},
            "splits": splits,
            "reference": state.reference is not None,
            "arrays": sorted(state.arrays),
            "scalars": dict(state.scalars),
            "alignment": alignment is not None,
        }
        return manifest, tensors

    @classmethod
    def from_fitted_state(
        cls, manifest: dict[str, Any], tensors: dict[str, Any], *, device: str = "auto"
    ) -> PairScorer:
        """A scorer rebuilt from :meth:`fitted_state`'s output; its :meth:`score_pairs` scores as
        the fitted one's did. Tensors may be torch tensors or numpy arrays.

        Raises
        ------
        InputError
            The manifest is of another method, or the manifest and tensors do not make a
            fitted scorer of this method (one line saying what is missing or wrong).
        """
        import torch

        from cleanpairs.core.agreement import AgreementSplit
        from cleanpairs.core.reference import NegativeSample
        from cleanpairs.device import resolve_device

        method = manifest.get("method")
        if method != cls.name:
            raise InputError(f"the fitted scorer is a {method!r} scorer, not {cls.name!r}")
        try:
            scorer = cls(seed=int(manifest["seed"]), device=device, **manifest["params"])
            scorer.params_ = scorer.get_params()
            scorer.device_ = resolve_device(device)
            scorer.sizes_ = dict(manifest["sizes"])

            def part(prefix: str) -> dict[str, Any]:
                start = len(prefix) + 1
                return {k[start:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}

            def array(value: Any) -> np.ndarray:
                return value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)

            modules = {}
            for name, spec in manifest["modules"].items():
                module = cls._build_module(spec)
                weights = {k: torch.as_tensor(v) for k, v in part(f"modules.{name}").items()}
                missing, unexpected = module.load_state_dict(weights, strict=False)
                if missing:
                    raise KeyError(f"modules.{name}.{missing[0]}")
                if unexpected:
                    raise ValueError(f"modules.{name}.{unexpected[0]} is not a weight of that network")
                modules[name] = module.to(scorer.device_).eval()
            splits = {
                name: AgreementSplit.from_params(
                    settings, {k: array(v) for k, v in part(f"splits.{name}").items()}
                )
                for name, settings in manifest["splits"].items()
            }
            reference = None
            if manifest["reference"]:
                reference = NegativeSample.from_arrays({k: array(v) for k, v in part("reference").items()})
            arrays = {name: array(tensors[f"arrays.{name}"]) for name in manifest["arrays"]}
            scorer.state_ = FittedState(modules, splits, reference, arrays, dict(manifest["scalars"]))
            scorer.alignment_ = None
            if manifest.get("alignment"):
                from cleanpairs.core.alignment import CorpusAlignment

                scorer.alignment_ = CorpusAlignment.from_arrays(
                    {k: array(v) for k, v in part("alignment").items()}
                )
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise InputError(f"the fitted {cls.name} scorer cannot be rebuilt: {_reason(err)}") from None
        return scorer

    def _fit(self, pairs: PairEmbeddings, **params: Any) -> PairScores:  # pragma: no cover
        raise NotImplementedError

    def _score_pairs(self, pairs: PairEmbeddings) -> PairScores:  # pragma: no cover
        raise NotImplementedError

    def _heads(self) -> Heads | None:
        """The heads scored pairs are embedded with (``None``: the encoder's own space)."""
        return None

    @staticmethod
    def _module_spec(module: nn.Module) -> dict[str, Any]:
        """How a kept network is built; methods with networks other than heads extend it."""
        from cleanpairs.core.heads import head_spec

        return head_spec(module)

    @staticmethod
    def _build_module(spec: dict[str, Any]) -> nn.Module:
        """An untrained network from :meth:`_module_spec`'s description."""
        from cleanpairs.core.heads import build_head

        return build_head(spec)


class _StatisticTap:
    """Stands in for a fitted split during :meth:`PairScorer.calibrate`: splits as the split does,
    and keeps the statistic it was given."""

    def __init__(self, split: AgreementSplit) -> None:
        self.split = split
        self.seen: list[np.ndarray] = []

    def posterior(self, cleanness: np.ndarray, agreement: Any = None) -> np.ndarray:
        self.seen.append(np.asarray(cleanness, dtype=np.float64).ravel())
        return self.split.posterior(cleanness, agreement)

    def carried(self) -> AgreementSplit:
        """The split carried onto what it was given (unchanged where it was not used)."""
        if not self.seen:
            return self.split
        return self.split.carried(np.concatenate(self.seen))


def _reason(err: Exception) -> str:
    """One line of why a fitted state did not load (torch's shape errors run to several lines)."""
    if isinstance(err, KeyError):
        return f"lacks {err.args[0]!r}"
    lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
    return next((line for line in lines if line.startswith("size mismatch")), lines[0])
