"""Noise-robust methods behind one interface, and their registry.

Importing this package is light: the methods' declarations (:mod:`cleanpairs.methods.specs`)
are data, and a method's trainer (with torch) is imported by :func:`get_method` when asked for.
"""

from cleanpairs.methods.base import (
    FittedState,
    Heads,
    MethodSpec,
    PairEmbeddings,
    PairScorer,
    PairScores,
    Param,
)
from cleanpairs.methods.registry import (
    DEFAULT_METHOD,
    available_methods,
    get_method,
    get_spec,
    load_scorer,
    register,
)

__all__ = [
    "DEFAULT_METHOD",
    "FittedState",
    "Heads",
    "MethodSpec",
    "PairEmbeddings",
    "PairScorer",
    "PairScores",
    "Param",
    "available_methods",
    "get_method",
    "get_spec",
    "load_scorer",
    "register",
]
