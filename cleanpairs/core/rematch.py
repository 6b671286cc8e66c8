"""Rematching: propose a new caption for each image of a mismatched pair.

The images and captions of the pairs taken as noisy are matched to each other by partial
optimal transport (POT): every noisy pair's image sends one unit of mass, every noisy
caption can receive one, only a fraction ``mass`` of the images' mass moves (an image
without a fitting caption in the corpus keeps none), and a caption may never go back to
its own image. A dense plan over all noisy pairs would be quadratic in N; here each image
may only send mass to its ``k`` nearest captions (faiss), and the images are solved a
block at a time, each block over the union of its candidates, with the captions' spent
capacity carried from block to block. Cost and memory grow with N x k.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cleanpairs.contract import Heads, PairEmbeddings
from cleanpairs.core.candidates import nearest_items, normalize_rows
from cleanpairs.errors import ParameterError

REMATCH_DEFAULTS = {"k": 10, "mass": 0.5, "threshold": 0.5, "block": 128}
"""Candidates per image, transported share of the mismatched images' mass, the ``p_clean``
below which a pair takes part, images per transport problem."""

UNREACHABLE = 1e3
"""Cost of an image-caption pair outside the candidate lists: far above any 1 - cosine."""


@dataclass
class Rematch:
    """Proposed partners, one entry per pair of the corpus.

    Attributes
    ----------
    index
        ``(n,)`` int64: the pair whose caption is proposed for this pair's image; -1 for none.
    score
        ``(n,)`` float32 >= 0, NaN where ``index`` is -1: how far the proposed caption beats
        the image's next candidate in hubness-corrected similarity. Wrong rematches are
        mostly near-ties; a threshold on this score trades coverage for accuracy.
    similarity
        ``(n,)`` float32 cosine of the image and its proposed caption, NaN where none.
    info
        What was run (k, mass, threshold, block, counts), for the run metadata.
    """

    index: np.ndarray
    score: np.ndarray
    similarity: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def forbid_own_image(
    candidates: np.ndarray, query_images: np.ndarray, caption_images: np.ndarray
) -> np.ndarray:
    """Candidate lists with every caption of the query's own image replaced by -1."""
    own = (candidates >= 0) & (caption_images[np.maximum(candidates, 0)] == query_images[:, None])
    return np.where(own, -1, candidates)


def transport_block(cost: np.ndarray, capacity: np.ndarray, mass: float) -> np.ndarray:
    """Partial OT of one block: each row sends at most 1, column ``j`` receives at most
    ``capacity[j]``, and ``mass`` of the rows' total moves (less if the columns cannot take it).

    Returns
    -------
    numpy.ndarray
        The transport plan, ``cost``'s shape.
    """
    rows = np.ones(cost.shape[0], dtype=np.float64)
    # Rounded half up, so that a last block of one image still moves it at mass 0.5.
    moved = float(np.floor(min(mass * cost.shape[0] + 0.5, capacity.sum())))
    if moved <= 0:
        return np.zeros_like(cost)
    import ot  # here, not above: POT imports torch, and the CLI checks REMATCH_DEFAULTS without it

    plan = ot.partial.partial_wasserstein(rows, capacity.astype(np.float64), cost, m=moved)
    return np.asarray(plan)


def order_by_first_choice(candidates: np.ndarray) -> np.ndarray:
    """An order of the queries that puts those whose best candidate is the same caption in
    the same block, so that they compete for it inside one transport problem."""
    first = np.where(candidates[:, 0] >= 0, candidates[:, 0], np.iinfo(np.int64).max)
    return np.argsort(first, kind="stable")


def check_rematch_params(k: int, mass: float, threshold: float, block: int) -> None:
    """One sentence per bad value, in the style of the method parameters."""
    if not (isinstance(k, int | np.integer) and k >= 1):
        raise ParameterError(f"The rematch 'k' must be an int in the range [1, inf). Got {k!r} instead.")
    if not 0 < mass <= 1:
        raise ParameterError(f"The rematch 'mass' must be a float in the range (0, 1]. Got {mass!r} instead.")
    if not 0 <= threshold <= 1:
        raise ParameterError(
            f"The rematch 'threshold' must be a float in the range [0, 1]. Got {threshold!r} instead."
        )
    if not (isinstance(block, int | np.integer) and block >= 2):
        raise ParameterError(
            f"The rematch 'block' must be an int in the range [2, inf). Got {block!r} instead."
        )


def caption_rows(texts: np.ndarray, caption_space: np.ndarray | None, rows: np.ndarray) -> np.ndarray:
    """The captions of ``rows`` as the rematch compares them: unit rows of the shared space,
    joined (when given) with unit rows of ``caption_space`` and scaled back to unit length,
    so that one inner product with a joined image row is half the sum of the two cosines."""
    shared = normalize_rows(texts[rows])
    if caption_space is None:
        return shared
    return normalize_rows(np.hstack([shared, normalize_rows(caption_space[rows])]))


def describe_images(
    images: np.ndarray,
    texts: np.ndarray,
    image_index: np.ndarray,
    kept: np.ndarray,
    caption_weight: float,
    caption_space: np.ndarray | None = None,
    chunk: int = 65_536,
) -> np.ndarray:
    """Each image as it is seen when looking for its caption: its unit embedding (padded with
    zeros over ``caption_space``'s part) plus ``caption_weight`` times the normalised sum of
    the captions kept for it (zero when none is).

    Captions of one image describe the same scene, so a caption written for an image is
    closer to that image's other captions than to most images (text to text is the stronger
    signal with separately trained encoders). Kept captions are summed ``chunk`` rows at a
    time, so memory does not grow with the corpus beyond the image matrix.
    """
    extra = 0 if caption_space is None else caption_space.shape[1]
    described = np.hstack([normalize_rows(images), np.zeros((len(images), extra), np.float32)])
    kept_sum = np.zeros_like(described)
    kept_rows = np.flatnonzero(kept)
    for start in range(0, len(kept_rows), chunk):
        rows = kept_rows[start : start + chunk]
        np.add.at(kept_sum, image_index[rows], caption_rows(texts, caption_space, rows))
    return described + caption_weight * normalize_rows(kept_sum)


def hubness_corrected(
    similarity: np.ndarray, query_hub: np.ndarray, item_hub: np.ndarray, candidates: np.ndarray
) -> np.ndarray:
    """CSLS: ``2 s - r_query - r_item``, where ``r`` is a point's mean similarity to its
    nearest neighbours on the other side. Generic captions ("a dog runs") sit close to many
    images; this keeps them from taking every image's first place."""
    return 2 * similarity - query_hub[:, None] - item_hub[np.maximum(candidates, 0)]


def rematch_pairs(
    images: np.ndarray,
    texts: np.ndarray,
    image_index: np.ndarray,
    p_clean: np.ndarray,
    *,
    k: int = 10,
    mass: float = 0.5,
    threshold: float = 0.5,
    block: int = 128,
    caption_weight: float = 1.0,
    caption_space: np.ndarray | None = None,
    use_gpu: bool = False,
) -> Rematch:
    """Propose a caption of another noisy pair for the image of every pair below ``threshold``.

    Parameters
    ----------
    images, texts, image_index
        Embeddings in one shared space (a method's trained heads, or an aligned encoder):
        ``(n_images, d)``, ``(n, d)`` and each pair's image row.
    p_clean
        ``(n,)`` clean posteriors; pairs below ``threshold`` take part, as images and as captions.
    k
        Candidate captions per image (faiss nearest neighbours).
    mass
        The fraction of the images' mass that is transported.
    block
        Images per transport problem.
    caption_weight
        Weight of the captions kept for an image in its description (:func:`describe_images`).
    caption_space
        ``(n, d')`` caption embeddings in which captions are compared with captions (the
        text encoder's own, typically). Without it the shared space serves both comparisons.

    Returns
    -------
    Rematch
        Partners for every pair (-1 / NaN for pairs that took no part or got none); the score
        is the margin by which the proposed caption beats the image's next candidate in
        hubness-corrected similarity (:func:`hubness_corrected`), 0 when it is only tied.
    """
    check_rematch_params(k, mass, threshold, block)
    n = len(texts)
    image_index = np.asarray(image_index, dtype=np.int64)
    p_clean = np.asarray(p_clean, dtype=np.float64)
    result = Rematch(
        index=np.full(n, -1, dtype=np.int64),
        score=np.full(n, np.nan, dtype=np.float32),
        similarity=np.full(n, np.nan, dtype=np.float32),
        info={
            "k": int(k),
            "mass": float(mass),
            "threshold": float(threshold),
            "block": int(block),
            "caption_weight": float(caption_weight),
        },
    )
    noisy = np.flatnonzero(p_clean < threshold)
    result.info.update(candidates=len(noisy), rematched=0)
    if len(noisy) < 2:
        return result

    # Image-to-caption in the shared space, caption-to-caption in the text encoder's
    # (``caption_space``); only the noisy captions are ever held whole.
    described = describe_images(
        images, texts, image_index, p_clean >= threshold, caption_weight, caption_space
    )
    noisy_images = image_index[noisy]
    partner, margin = match_flagged(
        described[noisy_images],
        caption_rows(texts, caption_space, noisy),
        noisy_images,
        k=k,
        mass=mass,
        block=block,
        use_gpu=use_gpu,
    )
    matched = np.flatnonzero(partner >= 0)
    rows, partners = noisy[matched], noisy[partner[matched]]
    result.index[rows] = partners
    result.score[rows] = margin[matched]
    result.similarity[rows] = np.einsum(
        "ij,ij->i", normalize_rows(images[image_index[rows]]), normalize_rows(texts[partners])
    )
    result.info["rematched"] = len(matched)
    return result


def match_flagged(
    described: np.ndarray,
    captions: np.ndarray,
    image_of: np.ndarray,
    *,
    k: int = 10,
    mass: float = 0.5,
    block: int = 128,
    use_gpu: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Match the flagged pairs' images to their captions: candidates, hubness, partial OT in blocks.

    Parameters
    ----------
    described
        ``(m, D)`` each flagged pair's image as :func:`describe_images` sees it.
    captions
        ``(m, D)`` each flagged pair's caption as :func:`caption_rows` joins it.
    image_of
        ``(m,)`` an id of each flagged pair's image: a caption never goes back to its own image.

    Returns
    -------
    partner, margin
        ``(m,)`` int64 the flagged pair whose caption each image takes (-1 for none), and
        float32 the margin by which it beats the image's next candidate (NaN for none).
    """
    image_of = np.asarray(image_of, dtype=np.int64)
    m = len(image_of)
    partner = np.full(m, -1, dtype=np.int64)
    margin = np.full(m, np.nan, dtype=np.float32)
    if m < 2:
        return partner, margin
    # Captions of the query's own image are forbidden; fetch enough extra neighbours to drop them.
    most_per_image = int(np.unique(image_of, return_counts=True)[1].max())
    sims, cands = nearest_items(described, captions, k + most_per_image, use_gpu=use_gpu, normalize=False)
    cands = forbid_own_image(cands, image_of, image_of)
    keep = np.argsort(cands < 0, axis=1, kind="stable")[:, :k]
    cands = np.take_along_axis(cands, keep, axis=1)
    sims = np.take_along_axis(sims, keep, axis=1)
    listed = cands >= 0
    query_hub = np.where(listed, sims, 0).sum(1) / np.maximum(listed.sum(1), 1)
    back, _ = nearest_items(captions, described, k, use_gpu=use_gpu, normalize=False)
    caption_hub = back.mean(axis=1)
    adjusted = np.where(listed, hubness_corrected(sims, query_hub, caption_hub, cands), -np.inf)

    capacity = np.ones(m, dtype=np.float64)
    finite = adjusted[listed]
    top = float(finite.max()) if finite.size else 0.0
    order = order_by_first_choice(cands)
    for start in range(0, len(order), block):
        queries = order[start : start + block]
        partner[queries] = _solve_block(cands[queries], top - adjusted[queries], capacity, mass)

    matched = np.flatnonzero(partner >= 0)
    chosen = cands[matched] == partner[matched, None]
    best = adjusted[matched][chosen]
    runner_up = np.where(chosen, -np.inf, adjusted[matched]).max(axis=1)
    gap = np.where(np.isfinite(runner_up), best - runner_up, best - adjusted[matched].min(axis=1))
    margin[matched] = np.maximum(gap, 0)
    return partner, margin


def _solve_block(
    candidates: np.ndarray, cost_of: np.ndarray, capacity: np.ndarray, mass: float
) -> np.ndarray:
    """Transport one block of images onto the union of their candidates; update ``capacity``.

    Returns each image's partner (a column of ``capacity``) or -1.
    """
    partner = np.full(len(candidates), -1, dtype=np.int64)
    listed = candidates >= 0
    columns = np.unique(candidates[listed])
    columns = columns[capacity[columns] > 1e-9]
    if len(columns) == 0:
        return partner
    position = np.minimum(np.searchsorted(columns, np.maximum(candidates, 0)), len(columns) - 1)
    valid = listed & (columns[position] == candidates)
    cost = np.full((len(candidates), len(columns)), UNREACHABLE)
    rows = np.broadcast_to(np.arange(len(candidates))[:, None], candidates.shape)
    cost[rows[valid], position[valid]] = cost_of[valid]
    plan = transport_block(cost, capacity[columns], mass)
    # Mass on an unlisted pair only appears when the listed ones cannot carry it; it is dropped.
    plan[cost >= UNREACHABLE] = 0.0
    capacity[columns] = np.maximum(capacity[columns] - plan.sum(axis=0), 0.0)
    took = plan.max(axis=1) > 0.5
    partner[took] = columns[plan.argmax(axis=1)[took]]
    return partner


def rematch_in_shared_space(
    pairs: PairEmbeddings, heads: Heads | None, p_clean: np.ndarray, **settings: Any
) -> Rematch:
    """:func:`rematch_pairs` where images and captions meet in the space of a method's trained
    ``heads`` (the encoder's own when there are none and it is aligned), and captions meet
    captions in the text encoder's space.

    Raises
    ------
    ParameterError
        No heads and an encoder whose two spaces are separate: nothing to match in.
    """
    images, texts = shared_space(pairs, heads)
    return rematch_pairs(images, texts, pairs.image_index, p_clean, caption_space=pairs.texts, **settings)


def shared_space(pairs: PairEmbeddings, heads: Heads | None) -> tuple[np.ndarray, np.ndarray]:
    """The pairs' images and captions in the space they are matched in: the method's trained
    ``heads``, or the encoder's own where there are none and it is aligned.

    Raises
    ------
    ParameterError
        No heads and an encoder whose two spaces are separate: nothing to match in.
    """
    if heads is not None:
        return heads.embed_images(pairs.images), heads.embed_texts(pairs.texts)
    if pairs.aligned:
        return pairs.images, pairs.texts
    raise ParameterError(
        "this method trained no shared space and the encoder has none: nothing to rematch in"
    )
