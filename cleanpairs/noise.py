"""Synthetic noisy correspondence with known truth, for tests and benchmarks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cleanpairs.errors import ParameterError


@dataclass(frozen=True)
class InjectedNoise:
    """A caption permutation and the truth it makes.

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
    if not 0.0 <= rate <= 1.0:
        raise ParameterError(f"noise rate must be within [0, 1]; got {rate}")
    ids = np.asarray(image_ids)
    n = len(ids)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(n, size=round(rate * n), replace=False))
    source = np.arange(n)
    if len(chosen) > 1:
        perm = rng.permutation(chosen)
        # Repair fixed points of the image: swap each with a random partner that fixes both.
        for _ in range(10):
            bad = np.flatnonzero(ids[perm] == ids[chosen])
            if len(bad) == 0:
                break
            for b in bad:
                for c in rng.permutation(len(chosen))[:64]:
                    if ids[perm[c]] != ids[chosen[b]] and ids[perm[b]] != ids[chosen[c]]:
                        perm[b], perm[c] = perm[c], perm[b]
                        break
        source[chosen] = perm
    return InjectedNoise(caption_source=source, is_clean=ids[source] == ids)
