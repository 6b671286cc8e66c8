"""The registry of methods: ``cleanpairs score --method NAME`` looks names up here."""

from __future__ import annotations

from cleanpairs.errors import ParameterError
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
