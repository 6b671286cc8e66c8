"""Synthetic noisy correspondence with known truth, for tests and benchmarks.

Four kinds, each taking a ``rate`` (the share of pairs made mismatched):

- ``shuffle``: captions permuted among randomly chosen pairs (NCR's protocol);
- ``partial``: the same, but every image keeps at least one of its own captions (RCAR's
  partial noise: some captions of an image are wrong);
- ``complete`` (alias ``image``): whole images' caption sets permuted among chosen images,
  so that none of a chosen image's captions describe it (RCAR's complete noise, the
  image-level shuffle of DECL/RCL);
- ``hard``: a chosen pair's caption replaced by one of the nearest captions of another image
  (near misses; needs the captions' embeddings).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cleanpairs.errors import ParameterError

NOISE_KINDS = ("shuffle", "partial", "complete", "hard")
_ALIASES = {"image": "complete"}


@dataclass(frozen=True)
class InjectedNoise:
    """A caption reassignment and the truth it makes.

    Attributes
    ----------
    caption_source
        ``(n,)``: pair ``i`` now carries the caption of pair ``caption_source[i]``.
    is_clean
        ``(n,)`` bool: whether pair ``i``'s caption still describes its image (it is one of
        its own image's captions).
    """

    caption_source: np.ndarray
    is_clean: np.ndarray

    @property
    def noise_rate(self) -> float:
        return float(1.0 - self.is_clean.mean()) if len(self.is_clean) else 0.0


def _check_rate(rate: float) -> None:
    if not 0.0 <= rate <= 1.0:
        raise ParameterError(f"noise rate must be within [0, 1]; got {rate}")


def _truth(ids: np.ndarray, source: np.ndarray) -> InjectedNoise:
    return InjectedNoise(caption_source=source, is_clean=ids[source] == ids)


def _permute_avoiding_own_image(chosen: np.ndarray, ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A permutation of ``chosen`` in which, as far as possible, no pair gets a caption of its image.

    Fixed points of the image are swapped with a random partner that fixes both.
    """
    perm = rng.permutation(chosen)
    for _ in range(10):
        bad = np.flatnonzero(ids[perm] == ids[chosen])
        if len(bad) == 0:
            break
        for b in bad:
            for c in rng.permutation(len(chosen))[:64]:
                if ids[perm[c]] != ids[chosen[b]] and ids[perm[b]] != ids[chosen[c]]:
                    perm[b], perm[c] = perm[c], perm[b]
                    break
    return perm


def shuffle_captions(image_ids: np.ndarray, rate: float, *, seed: int = 0) -> InjectedNoise:
    """Permute the captions among a ``rate`` fraction of the pairs, chosen at random.

    A chosen pair that would receive a caption of its own image (several captions can share
    one image) trades with another chosen pair, so every chosen pair ends up mismatched
    whenever the chosen set spans more than one image; the truth is taken from the image
    ids after the shuffle, never assumed.

    Parameters
    ----------
    image_ids
        ``(n,)`` the image of each pair; pairs with equal ids show the same image.
    rate
        Fraction of pairs whose caption is shuffled, in [0, 1].
    seed
        Seed of the choice and of the permutation.
    """
    _check_rate(rate)
    ids = np.asarray(image_ids)
    n = len(ids)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(n, size=round(rate * n), replace=False))
    source = np.arange(n)
    if len(chosen) > 1:
        source[chosen] = _permute_avoiding_own_image(chosen, ids, rng)
    return _truth(ids, source)


def partial_noise(image_ids: np.ndarray, rate: float, *, seed: int = 0) -> InjectedNoise:
    """Shuffle the captions of a ``rate`` fraction of the pairs, leaving every image one of its own.

    Pairs are drawn at random, skipping any that would take the last own caption from its
    image; an image with a single caption is never touched.

    Raises
    ------
    ParameterError
        ``rate`` is above what partial noise allows for these images (with five captions per
        image, 0.8).
    """
    _check_rate(rate)
    ids = np.asarray(image_ids)
    n = len(ids)
    _, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    room = counts - 1
    wanted = round(rate * n)
    if wanted > room.sum():
        raise ParameterError(
            f"partial noise keeps one caption of every image, so at most {room.sum() / max(n, 1):.2f} "
            f"of these pairs can be mismatched; got rate {rate}"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    # The k-th pair of an image in the drawn order is accepted while k < room[image].
    rank = np.empty(n, dtype=np.int64)
    seen = np.zeros(len(counts), dtype=np.int64)
    for i in order:
        rank[i] = seen[inverse[i]]
        seen[inverse[i]] += 1
    allowed = order[rank[order] < room[inverse[order]]]
    chosen = np.sort(allowed[:wanted])
    source = np.arange(n)
    if len(chosen) > 1:
        source[chosen] = _permute_avoiding_own_image(chosen, ids, rng)
    return _truth(ids, source)


def complete_noise(image_ids: np.ndarray, rate: float, *, seed: int = 0) -> InjectedNoise:
    """Give whole images the caption sets of other images, about a ``rate`` fraction of the pairs.

    Images are drawn at random until their pairs reach ``rate`` of the corpus; their caption
    sets are then passed along a random cycle, so no chosen image keeps any of its own. Pair
    ``j`` of an image takes caption ``j`` (modulo its size) of the next image's set.
    """
    _check_rate(rate)
    ids = np.asarray(image_ids)
    n = len(ids)
    rng = np.random.default_rng(seed)
    uniq, inverse = np.unique(ids, return_inverse=True)
    members = np.split(np.argsort(inverse, kind="stable"), np.cumsum(np.bincount(inverse))[:-1])
    order = rng.permutation(len(uniq))
    sizes = np.array([len(members[g]) for g in order])
    take = int(np.searchsorted(np.cumsum(sizes), round(rate * n) - 0.5) + 1) if rate > 0 else 0
    chosen = order[: min(take, len(order))]
    source = np.arange(n)
    if len(chosen) > 1:
        for g, h in zip(chosen, np.roll(chosen, -1), strict=True):
            own, other = members[g], members[h]
            source[own] = other[np.arange(len(own)) % len(other)]
    return _truth(ids, source)


def hard_noise(
    image_ids: np.ndarray, texts: np.ndarray, rate: float, *, seed: int = 0, k: int = 10
) -> InjectedNoise:
    """Replace a ``rate`` fraction of the captions by one of their ``k`` nearest captions of other images.

    Nearness is the cosine of the captions' embeddings ``texts`` (``(n, d)``, one row per
    pair). The replacement is drawn uniformly among the ``k`` nearest captions written for
    another image, so the new caption is a near miss, not a random one. Captions are
    replaced, not permuted: one caption may now sit on several pairs.
    """
    from cleanpairs.core.candidates import nearest_items

    _check_rate(rate)
    ids = np.asarray(image_ids)
    texts = np.asarray(texts, dtype=np.float32)
    n = len(ids)
    if texts.shape[0] != n:
        raise ParameterError(f"hard noise needs one caption embedding per pair; got {texts.shape[0]} for {n}")
    if k < 1:
        raise ParameterError(f"hard noise needs k >= 1 neighbours; got {k}")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(n, size=round(rate * n), replace=False))
    source = np.arange(n)
    if len(chosen) == 0 or len(np.unique(ids)) < 2:
        return _truth(ids, source)
    per_image = int(np.unique(ids, return_counts=True)[1].max())
    reach = min(n, k + per_image)
    _, neighbours = nearest_items(texts[chosen], texts, reach, normalize=True)
    for row, pair in enumerate(chosen):
        others = [j for j in neighbours[row] if j >= 0 and ids[j] != ids[pair]][:k]
        if others:
            source[pair] = others[rng.integers(len(others))]
    return _truth(ids, source)


def noise_kind(name: str) -> str:
    """The canonical name of a noise kind (``image`` is ``complete``).

    Raises
    ------
    ParameterError
        An unknown kind; the message lists the known ones.
    """
    kind = _ALIASES.get(name.strip().lower(), name.strip().lower())
    if kind not in NOISE_KINDS:
        known = ", ".join(NOISE_KINDS)
        raise ParameterError(f"unknown noise kind {name!r}; known kinds: {known} (image = complete)")
    return kind


def inject_noise(
    kind: str, image_ids: np.ndarray, rate: float, *, seed: int = 0, texts: np.ndarray | None = None
) -> InjectedNoise:
    """Make a ``rate`` fraction of the pairs mismatched with the named kind of noise.

    ``texts`` (the captions' embeddings) is needed by ``hard`` only.
    """
    kind = noise_kind(kind)
    if kind == "hard":
        if texts is None:
            raise ParameterError("hard noise picks near captions and needs the captions' embeddings")
        return hard_noise(image_ids, texts, rate, seed=seed)
    make = {"shuffle": shuffle_captions, "partial": partial_noise, "complete": complete_noise}[kind]
    return make(image_ids, rate, seed=seed)


def parse_noise_specs(specs: list[str]) -> list[tuple[str, float]]:
    """``["shuffle:0.2,0.4", "hard:0.2"]`` -> ``[("shuffle", 0.2), ("shuffle", 0.4), ("hard", 0.2)]``.

    Raises
    ------
    ParameterError
        A spec without ``KIND:RATES``, an unknown kind, or a rate outside [0, 1].
    """
    out: list[tuple[str, float]] = []
    for spec in specs:
        name, sep, rates = spec.partition(":")
        if not sep or not rates.strip():
            raise ParameterError(f"--noise takes KIND:RATE[,RATE...], as shuffle:0.2,0.4; got {spec!r}")
        kind = noise_kind(name)
        for text in rates.split(","):
            try:
                rate = float(text)
            except ValueError:
                raise ParameterError(f"--noise {spec!r}: {text.strip()!r} is not a number") from None
            _check_rate(rate)
            out.append((kind, rate))
    return out
