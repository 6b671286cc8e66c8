"""The method contract: the :class:`PairScorer` base class every method derives from, and the
:class:`MethodSpec` that declares a method without importing its implementation.

The types it takes and returns live in :mod:`cleanpairs.contract` (below the core) and are
re-exported here. Nothing here imports torch: the CLI checks a method's name and parameters
with this module alone, before any heavy import."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from cleanpairs.contract import Heads, PairEmbeddings, PairScores, Param
from cleanpairs.errors import NotFittedError, ParameterError

__all__ = ["Heads", "MethodSpec", "PairEmbeddings", "PairScorer", "PairScores", "Param", "head_params"]


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
    """

    name: str
    summary: str
    module: str
    params: Mapping[str, Param] = field(default_factory=dict)
    needs_trusted: bool = False
    validate: Callable[[dict[str, Any]], None] | None = None

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
    only stores keyword-only hyperparameters (and an optional ``on_epoch`` observer); ``fit``
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
        **hyperparameters: Any,
    ) -> None:
        self.seed = seed
        self.device = device
        self.on_epoch = on_epoch
        self.hyperparameters = hyperparameters

    def epoch_done(self, epoch: int, heads: Callable[[], Heads]) -> None:
        """Show ``on_epoch`` (when given) the heads as they stand after training epoch ``epoch``.

        ``heads`` is called only when someone watches, so unwatched runs pay nothing. Benchmarks
        use this to follow retrieval quality over the epochs (training stability).
        """
        if self.on_epoch is not None:
            self.on_epoch(epoch, heads())

    @classmethod
    def check_params(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        """Check ``values`` against the method's spec (:meth:`MethodSpec.check_params`)."""
        return cls.spec.check_params(values)

    def get_params(self) -> dict[str, Any]:
        """Every hyperparameter's value, defaults filled in (after checking them)."""
        return self.check_params(self.hyperparameters)

    def fit(self, pairs: PairEmbeddings, trusted: PairEmbeddings | None = None) -> PairScorer:
        """Learn on ``pairs`` (the noisy corpus) and keep the per-pair results.

        ``trusted`` holds pairs known to be clean, embedded like ``pairs``; methods with
        ``needs_trusted`` require it, the others ignore it.
        """
        if len(pairs) < 2:
            raise ParameterError(f"{self.name} needs at least 2 scorable pairs; got {len(pairs)}")
        if self.needs_trusted and (trusted is None or len(trusted) < 2):
            raise ParameterError(
                f"{self.name} learns from a trusted set of clean pairs and none was given; "
                "pass one with --meta trusted.parquet, or --meta-keys keys.txt for rows of the corpus itself"
            )
        self.trusted = trusted
        self.params_ = self.get_params()
        self.scores_ = self._fit(pairs, **self.params_)
        return self

    def score(self) -> PairScores:
        """The per-pair scores of the corpus given to ``fit``, in its order."""
        if not hasattr(self, "scores_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call fit() first")
        return self.scores_

    def _fit(self, pairs: PairEmbeddings, **params: Any) -> PairScores:  # pragma: no cover
        raise NotImplementedError
