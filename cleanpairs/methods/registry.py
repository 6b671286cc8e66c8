"""The registry of methods: ``cleanpairs score --method NAME`` looks names up here."""

from __future__ import annotations

import os

from cleanpairs.errors import InputError, ParameterError
from cleanpairs.io.scorers import load_scorer_files
from cleanpairs.methods.base import PairScorer

_REGISTRY: dict[str, type[PairScorer]] = {}

DEFAULT_METHOD = "ncr"
"""The best method of our benchmark (docs/benchmarks.md): the highest detection AUROC at every
noise rate among the methods that need nothing but the corpus."""


def register(cls: type[PairScorer]) -> type[PairScorer]:
    """Class decorator that makes a :class:`PairScorer` available by its ``name``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"a method named {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    return cls


def available_methods() -> list[str]:
    """The registered method names, sorted."""
    return sorted(_REGISTRY)


def get_method(name: str) -> type[PairScorer]:
    """The method class registered under ``name``.

    Raises
    ------
    ParameterError
        No method has that name; the message lists those that exist.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ParameterError(
            f"unknown method {name!r}; available: {', '.join(available_methods())}"
        ) from None


def load_scorer(folder: str | os.PathLike, *, device: str = "auto") -> PairScorer:
    """The fitted scorer saved in ``folder`` (``save_scorer(folder, *scorer.fitted_state())``),
    its networks on ``device``, ready for :meth:`PairScorer.score_pairs`.

    Raises
    ------
    InputError
        The folder is not a readable scorer (:func:`cleanpairs.io.scorers.load_scorer_files`),
        names a method this installation does not have, or does not make a scorer of it.
    """
    manifest, tensors = load_scorer_files(folder)
    try:
        cls = get_method(str(manifest["method"]))
    except ParameterError as err:
        raise InputError(f"the scorer in {folder} cannot be used: {err}") from None
    return cls.from_fitted_state(manifest, tensors, device=device)
