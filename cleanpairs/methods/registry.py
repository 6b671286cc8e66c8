"""The registry of methods: ``cleanpairs score --method NAME`` looks names up here.

Names, summaries and parameters come from the methods' specs (:mod:`cleanpairs.methods.specs`)
and cost no heavy import; a method's trainer (and torch) is imported only when its class is
asked for (:func:`get_method`)."""

from __future__ import annotations

import importlib
import os

from cleanpairs.errors import InputError, ParameterError
from cleanpairs.methods.base import MethodSpec, PairScorer
from cleanpairs.methods.specs import METHOD_SPECS

_SPECS: dict[str, MethodSpec] = dict(METHOD_SPECS)
_CLASSES: dict[str, type[PairScorer]] = {}

DEFAULT_METHOD = "robust"
"""The method whose worst detection AUROC over our benchmark's kinds of noise is the highest
(docs/benchmarks.md, docs/methods.md "robust"): a user does not know which kind their corpus has."""


def register(cls: type[PairScorer]) -> type[PairScorer]:
    """Class decorator that makes a :class:`PairScorer` available by its spec's name.

    A class whose spec is not among the shipped ones (a method of your own) adds it.
    """
    spec = cls.__dict__.get("spec")
    if spec is None:
        raise ValueError(f"{cls.__name__} declares no spec; set spec = MethodSpec(...) on the class")
    known = _SPECS.get(spec.name)
    if (known is not None and known is not spec) or _CLASSES.get(spec.name, cls) is not cls:
        raise ValueError(f"a method named {spec.name!r} is already registered")
    _SPECS[spec.name] = spec
    _CLASSES[spec.name] = cls
    return cls


def available_methods() -> list[str]:
    """The registered method names, sorted."""
    return sorted(_SPECS)


def get_spec(name: str) -> MethodSpec:
    """The declaration of the method registered under ``name``, without importing its trainer.

    Raises
    ------
    ParameterError
        No method has that name; the message lists those that exist.
    """
    try:
        return _SPECS[name]
    except KeyError:
        raise ParameterError(
            f"unknown method {name!r}; available: {', '.join(available_methods())}"
        ) from None


def get_method(name: str) -> type[PairScorer]:
    """The method class registered under ``name`` (its module is imported on first use).

    Raises
    ------
    ParameterError
        No method has that name; the message lists those that exist.
    """
    spec = get_spec(name)
    if name not in _CLASSES:
        importlib.import_module(spec.module)  # the module's @register fills _CLASSES
    if name not in _CLASSES:
        raise ParameterError(f"method {name!r}: {spec.module} registers no PairScorer of that name")
    return _CLASSES[name]


def load_scorer(folder: str | os.PathLike, *, device: str = "auto") -> PairScorer:
    """The fitted scorer saved in ``folder`` (``save_scorer(folder, *scorer.fitted_state())``),
    its networks on ``device``, ready for :meth:`PairScorer.score_pairs`.

    Raises
    ------
    InputError
        The folder is not a readable scorer (:func:`cleanpairs.io.scorers.load_scorer_files`),
        names a method this installation does not have, or does not make a scorer of it.
    """
    from cleanpairs.io.scorers import load_scorer_files  # torch: only when a scorer is loaded

    manifest, tensors = load_scorer_files(folder)
    try:
        cls = get_method(str(manifest["method"]))
    except ParameterError as err:
        raise InputError(f"the scorer in {folder} cannot be used: {err}") from None
    return cls.from_fitted_state(manifest, tensors, device=device)
