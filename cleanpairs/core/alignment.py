"""Corpus alignment: one linear map of each encoder's space into a shared one, fit in closed form
on the corpus's cross-moments (canonical correlation analysis), before any method trains.

Why it helps a fit on a sample: the moments are sums over pairs, so they are gathered over every
pair of every shard in bounded memory, while the heads learn from the sample alone. Shuffled
captions add nothing to the image-text cross-covariance in expectation (their caption is
independent of their image), so noise dilutes it without bending it; the canonical directions of
the noisy corpus are those of its clean pairs (``docs/methods.md``, "Corpus alignment").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cleanpairs.contract import Heads, PairEmbeddings
from cleanpairs.core.agreement import image_share

ALIGN_DIM = 128
"""Canonical directions kept (fewer where either encoder has fewer dimensions)."""

ALIGN_RIDGE = 0.3
"""Ridge added to each covariance, as a share of its mean variance: a sample-sized estimate
of a 1,280-d covariance has tiny, noisy eigenvalues that whitening would blow up."""

ALIGN_RIDGE_PER_DIM = 2.0
"""The ridge grows to this times the two encoders' dimensions per pair where that is larger:
with fewer pairs than dimensions, whitened canonical directions can correlate any pairing,
wrong captions included, and a fit trained in that space flags few of them. Unchanged on
corpora of ``(d_image + d_text) * 6.7`` pairs or more (11,000 with the offline encoders)."""

ALIGN_POWER = 0.5
"""Each canonical direction is weighted by its correlation to this power on both sides, so a
cosine in the shared space leans on the directions the two encoders agree on most."""

AUTO_MAX_SHARE = 0.67
"""``align=auto`` aligns a sample fit unless the shared cosine's image share reaches this. On
Flickr8k the share is 0.08-0.23 under shuffled captions and 0.56-0.58 under near-miss ones (both
gain from the alignment on a sample) and 0.76-0.77 where whole images carry another image's
captions (which loses); the threshold sits between the last two (docs/methods.md, "Corpus
alignment")."""

_CHUNK = 8192


@dataclass
class CrossMoments:
    """Sums over pairs of the image and text embeddings, their squares and their products.

    Summed over shards with ``+``; they fit a :class:`CorpusAlignment`. Float64, so that
    sums over 10^9 pairs keep their precision.
    """

    count: int
    image_sum: np.ndarray
    text_sum: np.ndarray
    image_image: np.ndarray
    text_text: np.ndarray
    image_text: np.ndarray

    @classmethod
    def of(cls, images: np.ndarray, texts: np.ndarray) -> CrossMoments:
        """The moments of ``n`` pairs: ``images`` ``(n, d_image)`` (each pair's image) and
        ``texts`` ``(n, d_text)``, taken in chunks so no float64 copy of them is made."""
        d_x, d_y = images.shape[1], texts.shape[1]
        moments = cls(0, np.zeros(d_x), np.zeros(d_y), np.zeros((d_x, d_x)),
                      np.zeros((d_y, d_y)), np.zeros((d_x, d_y)))  # fmt: skip
        for start in range(0, len(images), _CHUNK):
            x = np.asarray(images[start : start + _CHUNK], dtype=np.float64)
            y = np.asarray(texts[start : start + _CHUNK], dtype=np.float64)
            moments.count += len(x)
            moments.image_sum += x.sum(0)
            moments.text_sum += y.sum(0)
            moments.image_image += x.T @ x
            moments.text_text += y.T @ y
            moments.image_text += x.T @ y
        return moments

    @classmethod
    def of_pairs(cls, pairs: PairEmbeddings) -> CrossMoments:
        """The moments of every pair of ``pairs``."""
        d_x, d_y = pairs.images.shape[1], pairs.texts.shape[1]
        total = cls.of(np.zeros((0, d_x)), np.zeros((0, d_y)))
        for start in range(0, len(pairs), _CHUNK):
            rows = slice(start, start + _CHUNK)
            total = total + cls.of(pairs.images[pairs.image_index[rows]], pairs.texts[rows])
        return total

    def __add__(self, other: CrossMoments) -> CrossMoments:
        return CrossMoments(
            self.count + other.count,
            self.image_sum + other.image_sum,
            self.text_sum + other.text_sum,
            self.image_image + other.image_image,
            self.text_text + other.text_text,
            self.image_text + other.image_text,
        )

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays (for a worker to hand back, or a file)."""
        return {"count": np.array(self.count, dtype=np.int64), "image_sum": self.image_sum,
                "text_sum": self.text_sum, "image_image": self.image_image,
                "text_text": self.text_text, "image_text": self.image_text}  # fmt: skip

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> CrossMoments:
        """The moments :meth:`to_arrays` gave."""
        return cls(int(arrays["count"]), *(np.asarray(arrays[k], dtype=np.float64) for k in
                   ("image_sum", "text_sum", "image_image", "text_text", "image_text")))  # fmt: skip


def ridge_for(pairs: int, dims: int) -> float:
    """The default ridge of an alignment fit on ``pairs`` pairs of encoders with ``dims``
    dimensions together."""
    return max(ALIGN_RIDGE, ALIGN_RIDGE_PER_DIM * dims / pairs)


def _inverse_sqrt(covariance: np.ndarray, ridge: float) -> np.ndarray:
    """``(C + ridge * mean variance * I)^(-1/2)``, symmetric."""
    scale = ridge * max(float(np.trace(covariance)) / len(covariance), 1e-12)
    values, vectors = np.linalg.eigh(covariance + scale * np.eye(len(covariance)))
    return (vectors * np.clip(values, 1e-12, None) ** -0.5) @ vectors.T


@dataclass
class CorpusAlignment:
    """The fitted maps: a pair's image ``x`` goes to ``(x - image_mean) @ image_map``, its text
    ``y`` to ``(y - text_mean) @ text_map``, each then put on the unit sphere."""

    image_mean: np.ndarray
    text_mean: np.ndarray
    image_map: np.ndarray
    text_map: np.ndarray

    @classmethod
    def fit(
        cls,
        moments: CrossMoments,
        *,
        dim: int = ALIGN_DIM,
        ridge: float | None = None,
        power: float = ALIGN_POWER,
    ) -> CorpusAlignment:
        """Canonical correlation analysis of the moments: whiten each side (with ``ridge``), take
        the top ``dim`` singular directions of the whitened cross-covariance, weight each by its
        correlation to ``power``. ``ridge`` defaults to :data:`ALIGN_RIDGE`, raised on corpora
        with few pairs per dimension (:data:`ALIGN_RIDGE_PER_DIM`).

        Raises
        ------
        ValueError
            Fewer than two pairs.
        """
        if moments.count < 2:
            raise ValueError(f"corpus alignment needs at least 2 pairs; got {moments.count}")
        n = moments.count
        if ridge is None:
            ridge = ridge_for(n, len(moments.image_sum) + len(moments.text_sum))
        mean_x, mean_y = moments.image_sum / n, moments.text_sum / n
        cov_x = moments.image_image / n - np.outer(mean_x, mean_x)
        cov_y = moments.text_text / n - np.outer(mean_y, mean_y)
        cov_xy = moments.image_text / n - np.outer(mean_x, mean_y)
        white_x, white_y = _inverse_sqrt(cov_x, ridge), _inverse_sqrt(cov_y, ridge)
        left, correlation, right = np.linalg.svd(white_x @ cov_xy @ white_y)
        k = min(dim, len(correlation))
        weight = np.clip(correlation[:k], 0.0, None) ** power
        return cls(
            mean_x.astype(np.float32),
            mean_y.astype(np.float32),
            (white_x @ left[:, :k] * weight).astype(np.float32),
            (white_y @ right[:k].T * weight).astype(np.float32),
        )

    @property
    def dim(self) -> int:
        return int(self.image_map.shape[1])

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        """Encoder image embeddings ``(n, d_image)`` -> unit vectors ``(n, dim)``."""
        return _unit((np.asarray(images, np.float32) - self.image_mean) @ self.image_map)

    def embed_texts(self, texts: np.ndarray) -> np.ndarray:
        """Encoder text embeddings ``(n, d_text)`` -> unit vectors ``(n, dim)``."""
        return _unit((np.asarray(texts, np.float32) - self.text_mean) @ self.text_map)

    def apply(self, pairs: PairEmbeddings | None) -> PairEmbeddings | None:
        """``pairs`` in the shared space (``aligned``: heads start from the identity there)."""
        if pairs is None:
            return None
        return PairEmbeddings(
            images=self.embed_images(pairs.images),
            texts=self.embed_texts(pairs.texts),
            image_index=pairs.image_index,
            keys=pairs.keys,
            aligned=True,
        )

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"image_mean": self.image_mean, "text_mean": self.text_mean,
                "image_map": self.image_map, "text_map": self.text_map}  # fmt: skip

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> CorpusAlignment:
        """The alignment :meth:`to_arrays` gave.

        Raises
        ------
        KeyError, ValueError
            An array is missing, or the maps do not fit the means.
        """
        alignment = cls(*(np.asarray(arrays[k], dtype=np.float32) for k in
                          ("image_mean", "text_mean", "image_map", "text_map")))  # fmt: skip
        if (len(alignment.image_mean), len(alignment.text_mean)) != (
            alignment.image_map.shape[0], alignment.text_map.shape[0]
        ) or alignment.image_map.shape[1] != alignment.text_map.shape[1]:
            raise ValueError("the alignment's maps do not fit its means")
        return alignment


def aligns_sample(alignment: CorpusAlignment, pairs: PairEmbeddings) -> tuple[bool, float | None]:
    """Whether ``align=auto`` trains a fit on the sample ``pairs`` in the shared space, and the
    image share it decided on: the share of the pairs' shared cosine that lies between images
    (:func:`~cleanpairs.core.agreement.image_share`). Trained from the aligned start, heads do
    worse where whole images carry wrong captions; that noise makes an image's captions rise and
    fall together. With one caption per image the share is unknown, and image-level noise is
    caption-level noise: it aligns."""
    shared = alignment.apply(pairs)
    cosine = np.einsum("ij,ij->i", shared.pair_images(), shared.texts)
    share = image_share(cosine, pairs.image_index)
    return (share is None or share < AUTO_MAX_SHARE), (None if share is None else round(share, 4))


class AlignedHeads(Heads):
    """Heads that take encoder embeddings: the alignment first, then the method's heads
    (``None``: the shared space itself)."""

    def __init__(self, alignment: CorpusAlignment, heads: Heads | None) -> None:
        self.alignment = alignment
        self.heads = heads

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        shared = self.alignment.embed_images(images)
        return shared if self.heads is None else self.heads.embed_images(shared)

    def embed_texts(self, texts: np.ndarray) -> np.ndarray:
        shared = self.alignment.embed_texts(texts)
        return shared if self.heads is None else self.heads.embed_texts(shared)


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norm, 1e-12)).astype(np.float32)


__all__ = ["ALIGN_DIM", "AUTO_MAX_SHARE", "AlignedHeads", "CorpusAlignment", "CrossMoments", "aligns_sample"]
