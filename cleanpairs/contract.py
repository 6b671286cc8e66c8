"""The contract types that the core and the methods share: what every scorer takes
(:class:`PairEmbeddings`), what it returns (:class:`PairScores`), the trained projections
(:class:`Heads`) and how a hyperparameter is declared and checked (:class:`Param`).

They live below both ``core/`` and ``methods/`` so that neither imports the other's layer."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class PairEmbeddings:
    """The frozen embeddings of a corpus's scorable pairs.

    Attributes
    ----------
    images
        ``(n_images, d_image)`` float32, one row per distinct image.
    texts
        ``(n_pairs, d_text)`` float32, one row per pair.
    image_index
        ``(n_pairs,)`` int64: the row of ``images`` each pair's image is.
    keys
        ``(n_pairs,)`` the pairs' keys, in input order.
    aligned
        True when image and text rows share one space (an open_clip encoder).
    """

    images: np.ndarray
    texts: np.ndarray
    image_index: np.ndarray
    keys: np.ndarray
    aligned: bool = False

    def __post_init__(self) -> None:
        self.images = np.ascontiguousarray(self.images, dtype=np.float32)
        self.texts = np.ascontiguousarray(self.texts, dtype=np.float32)
        self.image_index = np.asarray(self.image_index, dtype=np.int64)
        n = len(self.texts)
        if self.images.ndim != 2 or self.texts.ndim != 2:
            raise ValueError("images and texts must be 2-d matrices")
        if self.image_index.shape != (n,) or len(self.keys) != n:
            raise ValueError("image_index and keys must have one entry per text row")
        if n and (self.image_index.min() < 0 or self.image_index.max() >= len(self.images)):
            raise ValueError("image_index points outside the image matrix")

    def __len__(self) -> int:
        return len(self.texts)

    def pair_images(self) -> np.ndarray:
        """The image embedding of every pair, ``(n_pairs, d_image)``."""
        return self.images[self.image_index]

    def take(self, pairs: np.ndarray) -> PairEmbeddings:
        """The pairs at positions ``pairs`` (in that order), with only their images."""
        pairs = np.asarray(pairs, dtype=np.int64)
        used, owners = np.unique(self.image_index[pairs], return_inverse=True)
        return PairEmbeddings(self.images[used], self.texts[pairs], owners, self.keys[pairs], self.aligned)


class Heads:
    """Trained projections that map frozen image and text embeddings into a shared space."""

    def embed_images(self, images: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def embed_texts(self, texts: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass
class PairScores:
    """Per-pair results of a method, in the order of the :class:`PairEmbeddings` it was fit on.

    ``rematch_index`` is -1 and ``rematch_score`` NaN where the method proposed no partner.
    ``heads`` embeds queries the way the method's final similarity does (``None`` when the
    similarity is the encoder's own).
    """

    p_clean: np.ndarray
    soft_label: np.ndarray
    similarity: np.ndarray
    rematch_index: np.ndarray
    rematch_score: np.ndarray
    heads: Heads | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def without_rematch(
        cls, p_clean: np.ndarray, soft_label: np.ndarray, similarity: np.ndarray, **kwargs: Any
    ) -> PairScores:
        n = len(p_clean)
        return cls(
            p_clean=np.asarray(p_clean, dtype=np.float32),
            soft_label=np.asarray(soft_label, dtype=np.float32),
            similarity=np.asarray(similarity, dtype=np.float32),
            rematch_index=np.full(n, -1, dtype=np.int64),
            rematch_score=np.full(n, np.nan, dtype=np.float32),
            **kwargs,
        )


@dataclass(frozen=True)
class Param:
    """One declared hyperparameter: its type, default, allowed values and meaning."""

    kind: type
    default: Any
    doc: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple[Any, ...] | None = None

    def describe(self) -> str:
        """The allowed values in words, as they appear in error messages."""
        if self.choices is not None:
            return f"one of {', '.join(repr(c) for c in self.choices)}"
        name = {int: "an int", float: "a float", bool: "a bool", str: "a str"}[self.kind]
        if self.low is None and self.high is None:
            return name
        left = "(" if self.low_open or self.low is None else "["
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        right = ")" if self.high is None else "]"
        return f"{name} in the range {left}{low}, {high}{right}"

    def coerce(self, value: Any) -> Any:
        """Turn a command-line string into the declared type; other values pass through."""
        if not isinstance(value, str) or self.kind is str:
            return value
        text = value.strip()
        if self.kind is bool:
            lowered = text.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            return value
        try:
            return self.kind(text)
        except ValueError:
            if self.kind is int:
                try:
                    as_float = float(text)
                except ValueError:
                    return value
                return int(as_float) if as_float.is_integer() else value
            return value

    def accepts(self, value: Any) -> bool:
        if self.choices is not None:
            return value in self.choices
        if self.kind is bool:
            return isinstance(value, bool | np.bool_)
        if self.kind is int:
            ok = isinstance(value, int | np.integer) and not isinstance(value, bool)
        elif self.kind is float:
            ok = isinstance(value, int | float | np.floating | np.integer) and not isinstance(value, bool)
            ok = ok and math.isfinite(float(value))
        else:
            ok = isinstance(value, self.kind)
        if not ok:
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (self.high is not None and value > self.high)
