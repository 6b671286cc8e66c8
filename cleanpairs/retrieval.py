"""The final retrieval model: projection heads on the frozen encoder, trained with symmetric
InfoNCE on the pairs a method kept (and, optionally, the rematched ones).

The array-level functions (:func:`training_pairs`, :func:`train_retrieval`,
:func:`evaluate_retrieval`) take :class:`PairEmbeddings`; :func:`train_from_scores`,
:func:`evaluate_corpus` and :func:`search` are the glue the CLI calls, reading files through
:mod:`cleanpairs.io`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image

from cleanpairs.contract import Heads, PairEmbeddings, Param
from cleanpairs.core.candidates import build_index
from cleanpairs.core.heads import TorchHeads
from cleanpairs.core.losses import info_nce
from cleanpairs.core.training import HeadConfig, HeadTrainer, progress_bar
from cleanpairs.encoders import embed_corpus, make_encoder
from cleanpairs.errors import InputError, ParameterError
from cleanpairs.io.atomic import refuse_overwrite
from cleanpairs.io.images import ImageProblem, check_max_pixels, decode_image, read_image_bytes
from cleanpairs.io.models import (
    IndexNotSaved,
    SearchIndex,
    check_model_target,
    corpus_files_fingerprint,
    load_index,
    load_model,
    save_index,
    save_model,
)
from cleanpairs.io.scores import open_scores
from cleanpairs.io.tables import Corpus, ImageFolders, read_pairs
from cleanpairs.metrics import retrieval_metrics
from cleanpairs.schema import P_CLEAN, REMATCH_KEY, REMATCH_SCORE, ROW_NUMBER_KEY, RunMetadata

TEMPERATURE = 0.07
"""CLIP's starting temperature. On clean Flickr8k (offline encoder, dev rSum) it beat 0.05 and
0.1 at 6k and 30k training pairs: 242.6 vs 239.5 / 237.4 at 30k."""

EPOCH_SCALE_PAIRS = 45_000
"""Default epochs are ``round(sqrt(EPOCH_SCALE_PAIRS / n_pairs))``, at least 1.

Linear heads on frozen features overfit within a few epochs, and the sooner the larger the
corpus: on clean Flickr8k subsets the best epoch was 3 at 6k and 9k pairs, 2 at 12k-24k, 1 at
30k (each image's five captions make one epoch five looks at it), and 2 on the 17.7k pairs NCR
keeps at 40% noise (235.6 vs 227.1 after one). The square-root rule meets every one of these
within 2 rSum; a fixed number of epochs or of optimiser steps missed some by 5-13."""

REMATCH_THRESH = 0.15
"""Like ``cleanpairs export --rematch``: a rematched pair is used from this ``cp_rematch_score``."""

SEARCH_K = 5


def _check(name: str, value: Any, spec: Param) -> None:
    if not spec.accepts(value):
        raise ParameterError(
            f"The {name!r} parameter of train_retrieval must be {spec.describe()}. Got {value!r} instead."
        )


_TRAIN_PARAMS = {
    "epochs": Param(int, None, "training epochs", low=1),
    "temperature": Param(float, TEMPERATURE, "InfoNCE temperature", low=0, low_open=True),
    "dim": Param(int, 256, "shared embedding size", low=2),
    "hidden": Param(int, 0, "hidden width of each head (0: linear heads)", low=0),
    "lr": Param(float, 1e-3, "AdamW learning rate", low=0, low_open=True),
    "batch_size": Param(int, 256, "pairs per batch", low=2),
}


@dataclass
class RetrievalModel(Heads):
    """Trained heads that embed an encoder's image and text embeddings into one space.

    Attributes
    ----------
    heads
        The image head and the text head.
    encoder
        The id of the encoder whose embeddings the heads take (``offline``, ``openclip:...``);
        ``None`` when the model was trained on arrays of unknown origin.
    info
        How it was trained: epochs, temperature, dim, hidden, rows, and, when trained from a
        scores file, the threshold and the file with its fingerprint.
    """

    heads: TorchHeads
    encoder: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        return self.heads.embed_images(images)

    def embed_texts(self, texts: np.ndarray) -> np.ndarray:
        return self.heads.embed_texts(texts)


def training_pairs(
    pairs: PairEmbeddings,
    p_clean: np.ndarray,
    thresh: float,
    *,
    rematch_index: np.ndarray | None = None,
    rematch_score: np.ndarray | None = None,
    rematch_thresh: float = REMATCH_THRESH,
) -> PairEmbeddings:
    """The pairs to train on: those with ``p_clean >= thresh`` and, with rematch arrays, each
    rejected pair's image with the caption of its proposed partner where ``rematch_score``
    reaches ``rematch_thresh``.

    Parameters
    ----------
    pairs
        The scored corpus.
    p_clean
        ``(n,)`` clean posterior of each pair (NaN: not scored, never kept).
    thresh
        Keep pairs from this posterior on, in [0, 1].
    rematch_index, rematch_score
        ``(n,)`` a method's proposed partner (a row of ``pairs``, -1 for none) and its score.

    Returns
    -------
    PairEmbeddings
        The kept pairs, then the rematched ones (keyed by their image's pair), over the same
        image matrix.

    Raises
    ------
    ParameterError
        Arrays of the wrong length, a threshold outside [0, 1], only one of the rematch
        arrays, or fewer than two pairs left to train on.
    """
    n = len(pairs)
    p = np.asarray(p_clean, dtype=np.float64)
    if p.shape != (n,):
        raise ParameterError(f"p_clean has {p.shape} entries but the corpus has {n} pairs")
    if not 0.0 <= thresh <= 1.0:
        raise ParameterError(f"the threshold must be within [0, 1]; got {thresh}")
    if (rematch_index is None) != (rematch_score is None):
        raise ParameterError("give both rematch_index and rematch_score, or neither")
    kept = np.nan_to_num(p, nan=-np.inf) >= thresh
    moved = np.zeros(n, dtype=bool)
    partner = np.full(n, -1, dtype=np.int64)
    if rematch_index is not None:
        partner = np.asarray(rematch_index, dtype=np.int64)
        score = np.asarray(rematch_score, dtype=np.float64)
        if partner.shape != (n,) or score.shape != (n,):
            raise ParameterError(f"rematch_index and rematch_score must have one entry per pair ({n})")
        moved = ~kept & (partner >= 0) & (np.nan_to_num(score, nan=-np.inf) >= rematch_thresh)
    rows, partners = np.flatnonzero(kept), partner[moved]
    if len(rows) + len(partners) < 2:
        raise ParameterError(
            f"only {len(rows) + len(partners)} pair(s) reach cp_p_clean >= {thresh}"
            + (" or a rematch" if rematch_index is not None else "")
            + "; a retrieval model needs at least 2: lower the threshold"
        )
    rematched = np.flatnonzero(moved)
    return PairEmbeddings(
        images=pairs.images,
        texts=np.concatenate([pairs.texts[rows], pairs.texts[partners]]),
        image_index=np.concatenate([pairs.image_index[rows], pairs.image_index[rematched]]),
        keys=np.concatenate([np.asarray(pairs.keys)[rows], np.asarray(pairs.keys)[rematched]]),
        aligned=pairs.aligned,
    )


def default_epochs(n_pairs: int) -> int:
    """Training epochs for a corpus of ``n_pairs`` pairs (see :data:`EPOCH_SCALE_PAIRS`)."""
    return max(1, round(math.sqrt(EPOCH_SCALE_PAIRS / max(n_pairs, 1))))


def train_retrieval(
    pairs: PairEmbeddings,
    *,
    epochs: int | None = None,
    temperature: float = TEMPERATURE,
    dim: int = 256,
    hidden: int = 0,
    lr: float = 1e-3,
    batch_size: int = 256,
    seed: int = 0,
    device: str = "auto",
    progress: bool = False,
    encoder: str | None = None,
) -> RetrievalModel:
    """Train image and text heads on ``pairs`` with symmetric InfoNCE (captions of one image are
    never each other's negatives).

    Parameters
    ----------
    pairs
        The training pairs (typically :func:`training_pairs` of a scored corpus).
    epochs
        Passes over the pairs; ``None`` picks :func:`default_epochs` of the corpus size.
    temperature, dim, hidden, lr, batch_size
        InfoNCE temperature, shared space size, hidden width (0: linear heads), AdamW learning
        rate, pairs per batch. With an aligned encoder whose two sizes are equal, the heads
        keep that size and start as the identity.
    seed, device, progress
        Same seed, same model; ``auto`` takes CUDA where there is one; a progress bar on a terminal.
    encoder
        The id of the encoder that embedded ``pairs``, kept with the model.

    Raises
    ------
    ParameterError
        A value outside its range, or fewer than two pairs.
    """
    values = {"temperature": temperature, "dim": dim, "hidden": hidden, "lr": lr, "batch_size": batch_size}
    for name, value in values.items():
        _check(name, value, _TRAIN_PARAMS[name])
    if epochs is not None:
        _check("epochs", epochs, _TRAIN_PARAMS["epochs"])
    if len(pairs) < 2:
        raise ParameterError(f"a retrieval model needs at least 2 training pairs; got {len(pairs)}")
    n_epochs = epochs if epochs is not None else default_epochs(len(pairs))
    config = HeadConfig(dim=dim, hidden=hidden, batch_size=batch_size, lr=lr)
    tick = time.perf_counter()
    bar = progress_bar(0, "training") if progress else None
    try:
        trainer = HeadTrainer(pairs, config, seed=seed, device=device, progress=bar)
        if bar is not None:
            bar.total = n_epochs * trainer.steps_per_epoch()
        for _ in range(n_epochs):
            trainer.run_epoch(lambda b: info_nce(b.scores, temperature, b.same_image))
    finally:
        if bar is not None:
            bar.close()
    heads = trainer.heads()
    info = {
        "epochs": n_epochs,
        "temperature": temperature,
        "dim": int(trainer.image_head.shortcut.out_features),
        "hidden": hidden,
        "lr": lr,
        "batch_size": batch_size,
        "seed": seed,
        "rows": len(pairs),
        "images": len(np.unique(pairs.image_index)),
        "train_s": round(time.perf_counter() - tick, 3),
    }
    return RetrievalModel(heads, encoder, info)


def evaluate_retrieval(model_or_heads: Heads, pairs: PairEmbeddings) -> dict[str, float]:
    """Recall@1/5/10 of image-to-text and text-to-image retrieval on a clean corpus, and rSum.

    Returns
    -------
    dict
        ``i2t_r1`` ... ``t2i_r10`` in percent and ``rsum``
        (:func:`cleanpairs.metrics.retrieval_metrics`).
    """
    images = model_or_heads.embed_images(pairs.images)
    texts = model_or_heads.embed_texts(pairs.texts)
    return retrieval_metrics(images, texts, pairs.image_index)


def _read_scored_corpus(scores_path: str | os.PathLike) -> tuple[Corpus, RunMetadata]:
    """A scores file read back as the corpus it scored (same column roles, same images): each
    row's relative image path resolves against the folder of the table it came from, which the
    scores file's run metadata records (:class:`ImageFolders`)."""
    _, meta = open_scores(scores_path)
    roles = meta.roles
    key = roles.get("key")
    corpus = read_pairs(
        scores_path,
        key_col=None if key in (None, ROW_NUMBER_KEY) else key,
        image_col=roles.get("image"),
        text_col=roles.get("caption"),
    )
    folders = ImageFolders.from_metadata(meta.extra, len(corpus), scores_path)
    return dataclasses.replace(corpus, image_folders=folders), meta


def _read_corpus(source: str | os.PathLike, **columns: str | None) -> Corpus:
    """A corpus to evaluate or search: a scores file is read with the roles it records and its
    images found where it scored them, unless columns are named; any other table as it is."""
    if not any(columns.values()):
        try:
            return _read_scored_corpus(source)[0]
        except InputError:
            pass
    return read_pairs(source, **columns)


def _column(corpus: Corpus, name: str, rows: np.ndarray) -> np.ndarray:
    return np.asarray(corpus.table.column(name).to_numpy(zero_copy_only=False))[rows]


def _rematch_rows(corpus: Corpus, rows: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Each embedded row's ``cp_rematch_key`` as a position among the embedded rows (-1: none)."""
    position = {k: i for i, k in enumerate(keys.tolist())}
    partner_keys = corpus.table.column(REMATCH_KEY).to_pylist()
    return np.array([position.get(partner_keys[r], -1) for r in rows.tolist()], dtype=np.int64)


def train_from_scores(
    scores_path: str | os.PathLike,
    model_dir: str | os.PathLike,
    *,
    thresh: float = 0.5,
    rematch: bool = False,
    rematch_thresh: float = REMATCH_THRESH,
    epochs: int | None = None,
    seed: int = 0,
    device: str = "auto",
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    max_image_pixels: int | None = None,
) -> RetrievalModel:
    """Train a retrieval model on the pairs of a scores file that reach ``thresh`` (and, with
    ``rematch``, the rematched ones) and save it in ``model_dir``.

    The pairs are embedded with the encoder that scored them (from the embedding cache);
    images not in the cache with more than ``max_image_pixels`` pixels are left out.

    Raises
    ------
    CleanpairsError
        Not a scores file, a model folder that would overwrite something, a bad parameter, or
        nothing left to train on; nothing is written.
    """
    if not 0.0 <= thresh <= 1.0:
        raise ParameterError(f"--thresh must be within [0, 1]; got {thresh}")
    if rematch and not rematch_thresh >= 0:
        raise ParameterError(f"--rematch-thresh must be at least 0; got {rematch_thresh}")
    check_max_pixels(max_image_pixels)
    open_scores(scores_path)
    refuse_overwrite(model_dir, [scores_path])
    check_model_target(model_dir)
    corpus, meta = _read_scored_corpus(scores_path)
    embedded = embed_corpus(
        corpus,
        meta.encoder,
        cache_dir=cache_dir,
        device=device,
        progress=progress,
        max_image_pixels=max_image_pixels,
    )
    rows, pairs = embedded.rows, embedded.pairs
    p_clean = _column(corpus, P_CLEAN, rows).astype(np.float64)
    selection: dict[str, Any] = {}
    if rematch:
        selection = {
            "rematch_index": _rematch_rows(corpus, rows, np.asarray(pairs.keys)),
            "rematch_score": _column(corpus, REMATCH_SCORE, rows).astype(np.float64),
            "rematch_thresh": rematch_thresh,
        }
    chosen = training_pairs(pairs, p_clean, thresh, **selection)
    kept = int((np.nan_to_num(p_clean, nan=-np.inf) >= thresh).sum())
    model = train_retrieval(
        chosen, epochs=epochs, seed=seed, device=device, progress=progress, encoder=meta.encoder
    )
    model.info.update(
        {
            "threshold": thresh,
            "rows_kept": kept,
            "rows_rematched": len(chosen) - kept,
            "rematch_thresh": rematch_thresh if rematch else None,
            "scores_file": str(Path(scores_path).resolve()),
            "scores_method": meta.method,
            "input_fingerprint": meta.input_fingerprint,
            "corpus_fingerprint": embedded.fingerprint,
        }
    )
    save_model(model_dir, model.heads, meta.encoder, model.info)
    return model


def load_retrieval_model(model_dir: str | os.PathLike, *, device: str = "auto") -> RetrievalModel:
    """The model saved in ``model_dir`` by :func:`train_from_scores`."""
    saved = load_model(model_dir, device=device)
    return RetrievalModel(saved.heads, saved.encoder, saved.info)


@dataclass
class CorpusEvaluation:
    """Retrieval metrics of a model on a clean corpus, and how much of the corpus they cover."""

    metrics: dict[str, float]
    pairs: int
    images: int
    not_scored: int


def _embed_for(model: RetrievalModel, corpus: Corpus, **embedding: Any) -> Any:
    if model.encoder is None:
        raise InputError("the model does not name its encoder, so a corpus cannot be embedded for it")
    embedded = embed_corpus(corpus, model.encoder, **embedding)
    _check_input_sizes(model, embedded.pairs, corpus)
    return embedded


def _check_input_sizes(model: RetrievalModel, pairs: PairEmbeddings, corpus: Corpus) -> None:
    """Refuse embeddings of another size than the heads take (precomputed columns of another
    encoder), which torch would answer with a matrix-shape traceback."""
    for side, matrix, head in (
        ("image", pairs.images, model.heads.image_head),
        ("text", pairs.texts, model.heads.text_head),
    ):
        wanted = getattr(getattr(head, "shortcut", None), "in_features", None)
        if len(matrix) and wanted is not None and matrix.shape[1] != wanted:
            raise InputError(
                f"the {side} embeddings of {corpus.sources[0]} have {matrix.shape[1]} dimensions, but "
                f"the model's {side} head takes {wanted}; embed the corpus as the model's training corpus was"
            )


def evaluate_corpus(
    model_dir: str | os.PathLike,
    corpus: str | os.PathLike,
    *,
    key_col: str | None = None,
    image_col: str | None = None,
    text_col: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    device: str = "auto",
    progress: bool = True,
    max_image_pixels: int | None = None,
) -> CorpusEvaluation:
    """Recall@1/5/10 both ways and rSum of the saved model on ``corpus``, whose pairs are taken
    as all correct (a held-out clean split). Rows that cannot be embedded (an unreadable image,
    one of more than ``max_image_pixels`` pixels, an empty caption) are left out.

    Raises
    ------
    CleanpairsError
        A missing or foreign model folder, or a corpus that cannot be read.
    """
    check_max_pixels(max_image_pixels)
    model = load_retrieval_model(model_dir, device=device)
    table = _read_corpus(corpus, key_col=key_col, image_col=image_col, text_col=text_col)
    embedded = _embed_for(
        model, table, cache_dir=cache_dir, device=device, progress=progress, max_image_pixels=max_image_pixels
    )
    pairs = embedded.pairs
    if len(pairs) == 0:
        raise InputError(f"no pair of {corpus} could be embedded (unreadable images or empty captions)")
    return CorpusEvaluation(
        evaluate_retrieval(model, pairs),
        pairs=len(pairs),
        images=len(pairs.images),
        not_scored=len(table) - len(pairs),
    )


@dataclass
class SearchHit:
    """One result: its rank (from 1), cosine in the model's space, the pair key, and the image
    path (text queries) or the caption (image queries)."""

    rank: int
    score: float
    key: Any
    image: str | None
    caption: str | None


@dataclass
class SearchResult:
    """The ranked hits, the corpus searched, whether its index was built by this search, and why
    a built index could not be saved (``None`` when it was saved or loaded)."""

    hits: list[SearchHit]
    corpus: str
    items: int
    built_index: bool
    unsaved_reason: str | None = None


def _index_corpus(model: RetrievalModel, corpus: Corpus, **embedding: Any) -> SearchIndex:
    """Embed ``corpus`` with the model and index its distinct images and its captions."""
    embedded = _embed_for(model, corpus, **embedding)
    pairs, rows = embedded.pairs, embedded.rows
    if len(pairs) == 0:
        raise InputError("no pair of the corpus could be embedded (unreadable images or empty captions)")
    refs = corpus.image_refs()
    paths = [refs[r] if isinstance(refs[r], str) else None for r in rows.tolist()]
    captions = corpus.captions()
    keys = corpus.keys().take(pa.array(rows))
    # Each distinct image is one item, named by the first pair that shows it.
    image_rows, first = np.unique(pairs.image_index, return_index=True)
    image_items = pa.table(
        {"key": keys.take(pa.array(first)), "image": pa.array([paths[i] for i in first], pa.string())}
    )
    text_items = pa.table(
        {
            "key": keys,
            "image": pa.array(paths, pa.string()),
            "caption": pa.array([captions[r] for r in rows.tolist()], pa.string()),
        }
    )
    image_space = model.embed_images(pairs.images[image_rows])
    text_space = model.embed_texts(pairs.texts)
    info = {"corpus_fingerprint": embedded.fingerprint, "images": len(first), "captions": len(pairs)}
    return SearchIndex(build_index(image_space), build_index(text_space), image_items, text_items, info)


def _check_embeds_queries(model: RetrievalModel) -> None:
    if model.encoder is None or model.encoder == "precomputed":
        raise InputError(
            f"the model was trained on {model.encoder or 'unnamed'} embeddings, so it cannot embed a query"
        )


def _read_query_image(image: str | os.PathLike, max_pixels: int | None) -> Image.Image:
    """The query picture, read before any corpus is indexed so that a bad one fails at once."""
    try:
        return decode_image(read_image_bytes(str(Path(image).resolve())), max_pixels=max_pixels)
    except ImageProblem as problem:
        raise InputError(f"cannot use {image} as a query: {problem}") from None


def _embed_query(
    model: RetrievalModel, text: str | None, picture: Image.Image | None, device: str
) -> np.ndarray:
    encoder = make_encoder(model.encoder, device=device)
    if text is not None:
        return model.embed_texts(encoder.encode_texts([text]))
    return model.embed_images(encoder.encode_pixels(np.stack([encoder.preprocess(picture)])))


def _corpus_index(
    model_dir: str | os.PathLike,
    model: RetrievalModel,
    corpus: str | os.PathLike,
    columns: dict[str, str | None],
    **embedding: Any,
) -> tuple[SearchIndex, bool, str | None]:
    """The corpus's saved index, or a new one built and saved; whether it was built now; and
    why it could not be saved, if so (a read-only model folder: the search goes on in memory)."""
    fingerprint = corpus_files_fingerprint(corpus, *columns.values())
    index = load_index(model_dir, fingerprint)
    if index is not None:
        return index, False, None
    index = _index_corpus(model, _read_corpus(corpus, **columns), **embedding)
    try:
        save_index(model_dir, fingerprint, index)
    except IndexNotSaved as err:
        return index, True, str(err)
    return index, True, None


def _ranked(index: Any, items: pa.Table, query: np.ndarray, k: int, *, with_caption: bool) -> list[SearchHit]:
    scores, found = index.search(np.ascontiguousarray(query, dtype=np.float32), min(k, index.ntotal))
    valid = found[0] >= 0
    rows = items.take(pa.array(found[0][valid])).to_pylist()
    return [
        SearchHit(
            rank=rank,
            score=float(score),
            key=row["key"],
            image=row["image"],
            caption=row["caption"] if with_caption else None,
        )
        for rank, (score, row) in enumerate(zip(scores[0][valid].tolist(), rows, strict=True), start=1)
    ]


def search(
    model_dir: str | os.PathLike,
    corpus: str | os.PathLike | None,
    *,
    text: str | None = None,
    image: str | os.PathLike | None = None,
    k: int = SEARCH_K,
    key_col: str | None = None,
    image_col: str | None = None,
    text_col: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    device: str = "auto",
    progress: bool = True,
    max_image_pixels: int | None = None,
) -> SearchResult:
    """The ``k`` images of ``corpus`` nearest to a ``text`` query, or its ``k`` captions nearest
    to an ``image`` query, in the saved model's space.

    The corpus's indexes are built on the first search and saved under the model folder, keyed
    by the corpus's table files (path, size, modification time) and column choices; later
    searches of the same corpus load them and embed only the query; where the model folder
    cannot be written (read-only), the index is built in memory and ``unsaved_reason`` says
    why. ``corpus=None`` searches the scores file the model was trained from. Query and corpus
    images of more than ``max_image_pixels`` pixels are not decoded.

    Raises
    ------
    CleanpairsError
        Both or neither of ``text`` and ``image``, ``k`` below 1, a missing or foreign model
        folder, an unreadable corpus, an unreadable or too large query image.
    """
    if (text is None) == (image is None):
        raise InputError("give exactly one query: --text or --image")
    if text is not None and not text.strip():
        raise InputError("the text query is empty")
    if k < 1:
        raise ParameterError(f"k must be at least 1; got {k}")
    check_max_pixels(max_image_pixels)
    model = load_retrieval_model(model_dir, device=device)
    _check_embeds_queries(model)
    picture = _read_query_image(image, max_image_pixels) if image is not None else None
    if corpus is None:
        corpus = model.info.get("scores_file")
        if corpus is None or not Path(corpus).exists():
            raise InputError("the model's training corpus is not at hand; name the corpus to search")
    columns = {"key_col": key_col, "image_col": image_col, "text_col": text_col}
    embedding = {
        "cache_dir": cache_dir,
        "device": device,
        "progress": progress,
        "max_image_pixels": max_image_pixels,
    }
    index, built, unsaved = _corpus_index(model_dir, model, corpus, columns, **embedding)
    query = _embed_query(model, text, picture, device)
    if text is not None:
        hits = _ranked(index.images, index.image_items, query, k, with_caption=False)
        return SearchResult(hits, str(corpus), index.images.ntotal, built, unsaved)
    hits = _ranked(index.texts, index.text_items, query, k, with_caption=True)
    return SearchResult(hits, str(corpus), index.texts.ntotal, built, unsaved)
