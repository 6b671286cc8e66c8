"""cleanpairs: find and fix mismatched image-caption pairs in image-text corpora.

``import cleanpairs as cp`` is light: ``cp.score``, ``cp.read_scores``, ``cp.filter`` and
``cp.export`` (:mod:`cleanpairs.api`) are imported on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

from cleanpairs.errors import CleanpairsError, InputError, ParameterError

_API = ("score", "read_scores", "filter", "export")

__all__ = ["CleanpairsError", "InputError", "ParameterError", "__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        from cleanpairs import api

        return getattr(api, name)
    raise AttributeError(f"module 'cleanpairs' has no attribute {name!r}")
