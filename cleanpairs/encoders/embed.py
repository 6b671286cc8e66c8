"""Embedding a corpus: read each distinct image and caption once, reuse the cache, encode the rest."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from cleanpairs.contract import PairEmbeddings
from cleanpairs.encoders.base import Encoder, make_encoder
from cleanpairs.encoders.cache import EmbeddingCache, content_digest, default_cache_dir
from cleanpairs.errors import InputError
from cleanpairs.io.images import ImageProblem, check_max_pixels, decode_image, read_image_bytes
from cleanpairs.io.tables import Corpus
from cleanpairs.schema import STATUS_OK

IMAGE_BATCH = 32
NOT_FINITE = "embedding has NaN or inf"
CACHE_PART_ROWS = 1024


@dataclass
class EmbeddedCorpus:
    """A corpus's embeddings and the fate of each row.

    Attributes
    ----------
    pairs
        Embeddings of the scorable rows, in input order.
    rows
        The input row number of each entry of ``pairs``.
    status
        ``ok`` or the reason a row was not scored, for every input row.
    fingerprint
        A hash of the keys and of the content of every image and caption.
    encoded
        How many images and texts had to be encoded (the rest came from the cache).
    """

    pairs: PairEmbeddings
    rows: np.ndarray
    status: list[str]
    fingerprint: str
    encoded: dict[str, int] = field(default_factory=dict)


def unscorable_reason(status: Sequence[str], minimum: int = 1) -> str | None:
    """Why a corpus cannot be scored: fewer than ``minimum`` rows have status ``ok``; the
    sentence counts the other statuses, most frequent first. ``None`` where enough rows are ok.

    ``"no row could be scored: 200 x image is a URL; download the corpus first (...)"``
    """
    counts = Counter(status)
    scorable = counts.pop(STATUS_OK, 0)
    if scorable >= minimum:
        return None
    reasons = "; ".join(f"{n} x {why}" for why, n in counts.most_common(3))
    more = f"; and {len(counts) - 3} other reasons" if len(counts) > 3 else ""
    head = f"only {scorable} of {len(status)} rows could be scored" if scorable else "no row could be scored"
    return f"{head}: {reasons}{more}"


def check_scorable(status: Sequence[str], minimum: int = 1) -> None:
    """Raise :class:`InputError` saying why when fewer than ``minimum`` rows can be scored
    (see :func:`unscorable_reason`); the pipeline can call it before fitting a method."""
    reason = unscorable_reason(status, minimum)
    if reason is not None:
        raise InputError(reason)


def _bar(total: int, desc: str, progress: bool) -> tqdm:
    return tqdm(total=total, desc=desc, unit="item", disable=None if progress else True, leave=False)


def _prefetched(items: Sequence, fn: Callable, batch: int) -> Iterator[tuple[int, list]]:
    """Apply ``fn`` to ``items`` a batch at a time in a worker thread, one batch ahead."""
    starts = range(0, len(items), batch)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for start in starts:
            job = pool.submit(lambda s: [fn(x) for x in items[s : s + batch]], start)
            if pending is not None:
                yield pending[0], pending[1].result()
            pending = (start, job)
        if pending is not None:
            yield pending[0], pending[1].result()


def _preprocess_or_problem(
    encoder: Encoder, load: Callable[[], bytes], max_pixels: int | None
) -> np.ndarray | ImageProblem:
    # Loading is inside: a file removed since it was hashed is that row's problem, not the run's.
    try:
        return encoder.preprocess(decode_image(load(), max_pixels=max_pixels))
    except ImageProblem as problem:
        return problem


def encode_images_cached(
    encoder: Encoder,
    cache: EmbeddingCache,
    digests: list[bytes],
    load: Callable[[bytes], bytes],
    *,
    batch_size: int = IMAGE_BATCH,
    progress: bool = True,
    max_pixels: int | None = None,
) -> tuple[np.ndarray, dict[bytes, str], int]:
    """Embeddings of the images ``digests`` name, from the cache or by encoding them.

    Images of more than ``max_pixels`` pixels (default: Pillow's limit) are not decoded.
    Returns the ``(len(digests), dim)`` matrix (rows of undecodable images are zero), the
    problems by digest, and how many images were encoded.
    """
    found, cached = cache.lookup(digests)
    missing = [d for d, f in zip(digests, found, strict=True) if not f]
    problems: dict[bytes, str] = {}
    new_rows: dict[bytes, np.ndarray] = {}
    unsaved: list[bytes] = []
    if missing:
        bar = _bar(len(missing), "encoding images", progress)
        for start, prepared in _prefetched(
            missing, lambda d: _preprocess_or_problem(encoder, lambda: load(d), max_pixels), batch_size
        ):
            good = [
                (d, x)
                for d, x in zip(missing[start : start + batch_size], prepared, strict=True)
                if not isinstance(x, ImageProblem)
            ]
            for d, x in zip(missing[start : start + batch_size], prepared, strict=True):
                if isinstance(x, ImageProblem):
                    problems[d] = str(x)
            if good:
                emb = encoder.encode_pixels(np.stack([x for _, x in good]))
                new_rows.update({d: e for (d, _), e in zip(good, emb, strict=True)})
                unsaved += [d for d, _ in good]
            # Saved in parts as it goes, so a killed run keeps what it had encoded.
            if len(unsaved) >= CACHE_PART_ROWS or start + batch_size >= len(missing):
                cache.store(unsaved, np.stack([new_rows[d] for d in unsaved]) if unsaved else None)
                unsaved = []
            bar.update(len(prepared))
        bar.close()
    dim = cached.shape[1] if cached is not None else next(iter(new_rows.values())).shape[0] if new_rows else 0
    out = np.zeros((len(digests), dim), dtype=np.float32)
    if cached is not None:
        out[found] = cached
    for pos, d in enumerate(digests):
        if d in new_rows:
            out[pos] = new_rows[d]
    return out, problems, len(new_rows)


def encode_texts_cached(
    encoder: Encoder,
    cache: EmbeddingCache,
    texts: list[str],
    *,
    batch_size: int = 256,
    progress: bool = True,
) -> tuple[np.ndarray, int]:
    """Embeddings of ``texts`` (distinct captions), from the cache or by encoding them."""
    digests = [content_digest(t) for t in texts]
    found, cached = cache.lookup(digests)
    missing = [i for i, f in enumerate(found) if not f]
    dim = cached.shape[1] if cached is not None else 0
    new = None
    if missing:
        bar = _bar(len(missing), "encoding captions", progress)
        parts = []
        pending: list[np.ndarray] = []
        saved = 0
        for start in range(0, len(missing), batch_size):
            chunk = missing[start : start + batch_size]
            pending.append(encoder.encode_texts([texts[i] for i in chunk]))
            done = start + len(chunk)
            if done - saved >= CACHE_PART_ROWS or done == len(missing):
                block = np.concatenate(pending)
                cache.store([digests[i] for i in missing[saved:done]], block)
                parts.append(block)
                pending, saved = [], done
            bar.update(len(chunk))
        bar.close()
        new = np.concatenate(parts)
        dim = new.shape[1]
    out = np.zeros((len(texts), dim), dtype=np.float32)
    if cached is not None:
        out[found] = cached
    if new is not None:
        out[np.array(missing)] = new
    return out, len(missing)


def _read_images(refs: list[str | bytes | None]) -> tuple[list[bytes | None], list[str | None], dict]:
    """Each row's image digest (or ``None``) and problem; plus where to reload each digest."""
    digests: list[bytes | None] = [None] * len(refs)
    problems: list[str | None] = [None] * len(refs)
    source_of: dict[bytes, str | bytes] = {}
    by_path: dict[str, tuple[bytes | None, str | None]] = {}
    for row, ref in enumerate(refs):
        if isinstance(ref, str) and ref in by_path:
            digests[row], problems[row] = by_path[ref]
            continue
        try:
            data = read_image_bytes(ref)
            digest, problem = content_digest(data), None
            source_of.setdefault(digest, ref if isinstance(ref, str) else data)
        except ImageProblem as err:
            digest, problem = None, str(err)
        if isinstance(ref, str):
            by_path[ref] = (digest, problem)
        digests[row], problems[row] = digest, problem
    return digests, problems, source_of


def _fingerprint(
    keys: pa.Array, image_parts: Sequence[bytes | None], caption_parts: Sequence[bytes | None]
) -> str:
    digest = hashlib.sha1(usedforsecurity=False)
    for key, image, caption in zip(keys.to_pylist(), image_parts, caption_parts, strict=True):
        digest.update(str(key).encode())
        digest.update(image or b"-")
        digest.update(caption or b"-")
    return digest.hexdigest()


def _distinct_rows(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's distinct-row number, numbered in order of first appearance, and the row where
    each distinct row first appears (equal bytes make equal rows)."""
    if len(matrix) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    as_bytes = np.ascontiguousarray(matrix).view(np.dtype((np.void, matrix.dtype.itemsize * matrix.shape[1])))
    _, first, inverse = np.unique(as_bytes.ravel(), return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[inverse.ravel()].astype(np.int64), first[order].astype(np.int64)


def _matrices_fingerprint(keys: pa.Array, *matrices: tuple[np.ndarray, np.ndarray]) -> str:
    """A hash of the keys and of each (matrix, row has a vector) pair."""
    digest = hashlib.sha1(usedforsecurity=False)
    digest.update("\x00".join(map(str, keys.to_pylist())).encode())
    for matrix, present in matrices:
        digest.update(np.ascontiguousarray(present).tobytes())
        digest.update(np.ascontiguousarray(matrix[present]).tobytes())
    return digest.hexdigest()


def _embedding_matrix(column: pa.ChunkedArray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A list-of-numbers column as a float32 matrix, and a mask of rows that have a vector.

    Null entries inside a vector become NaN (the row is then refused as not finite).
    """
    array = column.combine_chunks()
    valid = ~np.asarray(array.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    lengths = np.asarray(array.value_lengths().fill_null(0).to_numpy(zero_copy_only=False))
    dim = int(lengths[valid][0]) if valid.any() else 0
    odd = np.flatnonzero(valid & (lengths != dim))
    if len(odd):
        first = int(np.flatnonzero(valid)[0])
        raise InputError(
            f"column {name!r} holds vectors of different lengths ({dim} in row {first}, "
            f"{int(lengths[odd[0]])} in row {int(odd[0])}); all must share one size"
        )
    if valid.any() and dim == 0:
        raise InputError(f"column {name!r} holds empty vectors; an embedding needs at least one number")
    out = np.zeros((len(array), dim), dtype=np.float32)
    if valid.any():
        flat = np.asarray(array.filter(pa.array(valid)).flatten().to_numpy(zero_copy_only=False), np.float32)
        out[valid] = flat.reshape(-1, dim)
    return out, valid


def _precomputed_status(has_image: bool, has_text: bool, finite: bool) -> str:
    if not has_image:
        return "no image embedding"
    if not has_text:
        return "no text embedding"
    # A NaN would reach the mixture models, which refuse the whole corpus for one row.
    return STATUS_OK if finite else NOT_FINITE


def _embed_precomputed(corpus: Corpus) -> EmbeddedCorpus:
    roles = corpus.roles
    if roles.image_emb is None or roles.text_emb is None:
        raise InputError(
            "encoder 'precomputed' needs image_emb and text_emb columns; "
            f"columns present: {', '.join(corpus.table.column_names)}"
        )
    images, has_image = _embedding_matrix(corpus.table.column(roles.image_emb), roles.image_emb)
    texts, has_text = _embedding_matrix(corpus.table.column(roles.text_emb), roles.text_emb)
    finite = np.isfinite(images).all(axis=1) & np.isfinite(texts).all(axis=1)
    status = [
        _precomputed_status(i, t, f)
        for i, t, f in zip(has_image.tolist(), has_text.tolist(), finite.tolist(), strict=True)
    ]
    check_scorable(status)
    rows = np.flatnonzero(has_image & has_text & finite)
    # Vectorised, not a digest per row: a shard of precomputed vectors is read at disk speed.
    image_index, first_rows = _distinct_rows(images[rows])
    image_matrix = images[rows[first_rows]]
    pairs = PairEmbeddings(
        images=image_matrix,
        texts=texts[rows],
        image_index=image_index,
        keys=np.asarray(corpus.keys().to_numpy(zero_copy_only=False))[rows],
        aligned=images.shape[1] == texts.shape[1],
    )
    return EmbeddedCorpus(
        pairs,
        rows,
        status,
        _matrices_fingerprint(corpus.keys(), (images, has_image), (texts, has_text)),
        {"images": 0, "texts": 0},
    )


def embed_corpus(
    corpus: Corpus,
    encoder: str | Encoder = "offline",
    *,
    cache_dir: str | Path | None = None,
    device: str = "auto",
    progress: bool = True,
    max_image_pixels: int | None = None,
) -> EmbeddedCorpus:
    """Embed every scorable pair of ``corpus``, each distinct image and caption once.

    Rows whose image cannot be read or decoded, has more than ``max_image_pixels`` pixels
    (default: Pillow's limit, :data:`cleanpairs.io.images.DEFAULT_MAX_PIXELS`), or whose
    caption is empty, are left out of the embeddings and get their reason in ``status``. With
    ``encoder="precomputed"`` the table's ``image_emb`` / ``text_emb`` columns are used as they
    are; rows whose vectors hold NaN or inf are left out the same way.

    Raises
    ------
    CleanpairsError
        A bad ``max_image_pixels``, an unknown encoder, precomputed embedding columns that
        are missing or hold vectors of different lengths, or no row that can be scored (the
        message counts each reason, see :func:`check_scorable`).
    """
    check_max_pixels(max_image_pixels)
    if encoder == "precomputed":
        return _embed_precomputed(corpus)
    model = make_encoder(encoder, device=device) if isinstance(encoder, str) else encoder
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    captions = corpus.captions()
    image_digests, problems, source_of = _read_images(corpus.image_refs())
    caption_ok = [isinstance(c, str) and c.strip() != "" for c in captions]
    status = [
        problems[r] or ("empty caption" if not caption_ok[r] else STATUS_OK) for r in range(len(corpus))
    ]
    check_scorable(status)  # before anything is encoded: a corpus of URLs is answered at once
    wanted = list(dict.fromkeys(d for d, s in zip(image_digests, status, strict=True) if s == STATUS_OK))
    image_matrix, decode_problems, n_images = encode_images_cached(
        model,
        EmbeddingCache(root, model.cache_id, "images"),
        wanted,
        lambda d: source_of[d] if isinstance(source_of[d], bytes) else read_image_bytes(source_of[d]),
        progress=progress,
        max_pixels=max_image_pixels,
    )
    for r, d in enumerate(image_digests):
        if status[r] == STATUS_OK and d in decode_problems:
            status[r] = decode_problems[d]
    rows = np.array([r for r, s in enumerate(status) if s == STATUS_OK], dtype=np.int64)
    check_scorable(status)
    keep = [i for i, d in enumerate(wanted) if d not in decode_problems]
    position = {wanted[i]: j for j, i in enumerate(keep)}
    distinct_texts = list(dict.fromkeys(captions[r] for r in rows))
    text_matrix, n_texts = encode_texts_cached(
        model, EmbeddingCache(root, model.cache_id, "texts"), distinct_texts, progress=progress
    )
    text_row = {t: i for i, t in enumerate(distinct_texts)}
    keys = np.asarray(corpus.keys().to_numpy(zero_copy_only=False))
    pairs = PairEmbeddings(
        images=image_matrix[keep] if keep else np.zeros((0, image_matrix.shape[1]), np.float32),
        texts=text_matrix[[text_row[captions[r]] for r in rows]] if len(rows) else text_matrix[:0],
        image_index=np.array([position[image_digests[r]] for r in rows], dtype=np.int64),
        keys=keys[rows],
        aligned=model.aligned,
    )
    caption_digests = [content_digest(c) if ok else None for c, ok in zip(captions, caption_ok, strict=True)]
    return EmbeddedCorpus(
        pairs,
        rows,
        status,
        _fingerprint(corpus.keys(), image_digests, caption_digests),
        {"images": n_images, "texts": n_texts},
    )
