"""Noise-robust methods behind one interface, and their registry."""

from cleanpairs.methods import crcl as _crcl  # noqa: F401  (registers itself)
from cleanpairs.methods import l2rm as _l2rm  # noqa: F401  (registers itself)
from cleanpairs.methods import mscn as _mscn  # noqa: F401  (registers itself)
from cleanpairs.methods import ncr as _ncr  # noqa: F401  (registers itself)
from cleanpairs.methods import rcar as _rcar  # noqa: F401  (registers itself)
from cleanpairs.methods import similarity as _similarity  # noqa: F401  (registers itself)
from cleanpairs.methods import tsvc as _tsvc  # noqa: F401  (registers itself)
from cleanpairs.methods.base import FittedState, Heads, PairEmbeddings, PairScorer, PairScores, Param
from cleanpairs.methods.registry import DEFAULT_METHOD, available_methods, get_method, load_scorer, register

__all__ = [
    "DEFAULT_METHOD",
    "FittedState",
    "Heads",
    "PairEmbeddings",
    "PairScorer",
    "PairScores",
    "Param",
    "available_methods",
    "get_method",
    "load_scorer",
    "register",
]
