"""The glue the CLI and notebooks call: score a corpus file, summarise a scores file.

Importing this module is light (pyarrow and numpy): every check on the user's input runs
before torch, the trainers or scikit-learn are imported, so a mistake is answered at once."""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import cleanpairs
from cleanpairs.core.rematch import REMATCH_DEFAULTS, check_rematch_params, rematch_in_shared_space
from cleanpairs.encoders import check_encoder_id, embed_corpus
from cleanpairs.errors import InputError, ParameterError
from cleanpairs.io.atomic import check_output_path, refuse_overwrite
from cleanpairs.io.images import check_max_pixels
from cleanpairs.io.scores import iter_batches, open_scores, write_scores
from cleanpairs.io.tables import TABLE_SUFFIXES, Corpus, expand_braces, read_keys, read_pairs
from cleanpairs.io.webdataset import TAR_SUFFIXES
from cleanpairs.methods import DEFAULT_METHOD, PairEmbeddings, PairScores, get_method, get_spec
from cleanpairs.schema import (
    P_CLEAN,
    REMATCH_KEY,
    REMATCH_SCORE,
    SIMILARITY,
    SOFT_LABEL,
    STATUS,
    STATUS_OK,
    RunMetadata,
)


def default_output(source: str | os.PathLike) -> Path:
    """Where ``score`` writes when no output is given: ``data.parquet`` -> ``data.scores.parquet``."""
    path = Path(source)
    if path.is_dir():
        return path.parent / f"{path.name}.scores.parquet"
    if any(ch in str(source) for ch in "*?[") or len(expand_braces(str(source))) > 1:
        raise InputError("a glob or brace-range input needs an explicit output path (-o scores.parquet)")
    stem = path.name
    for suffix in (*TABLE_SUFFIXES, *TAR_SUFFIXES):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return path.with_name(f"{stem}.scores.parquet")


def fit_method(
    pairs: PairEmbeddings,
    method: str = DEFAULT_METHOD,
    params: dict[str, Any] | None = None,
    *,
    seed: int = 0,
    device: str = "auto",
    trusted: PairEmbeddings | None = None,
) -> tuple[PairScores, dict[str, Any]]:
    """Fit the named method on ``pairs``; return its scores and the parameters it used."""
    cls = get_method(method)
    scorer = cls(seed=seed, device=device, **(params or {}))
    scorer.fit(pairs, trusted)
    return scorer.score(), scorer.params_


def rematch_scores(
    pairs: PairEmbeddings, scores: PairScores, settings: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Propose partners for the pairs below the threshold in the method's own space, in place.

    Images and captions meet in the space of the method's trained heads (or the encoder's
    when it is aligned and the method trained none); captions also meet captions in the text
    encoder's space (see :func:`cleanpairs.core.rematch.rematch_pairs`).

    Returns
    -------
    dict
        The settings and counts, for the run metadata.
    """
    found = rematch_in_shared_space(
        pairs, scores.heads, scores.p_clean, **{**REMATCH_DEFAULTS, **(settings or {})}
    )
    scores.rematch_index = found.index
    scores.rematch_score = found.score
    return found.info


def _full_column(values: np.ndarray, rows: np.ndarray, n: int, dtype: pa.DataType) -> pa.Array:
    full = np.full(n, np.nan, dtype=np.float32)
    full[rows] = values
    return pa.array(full, type=dtype, from_pandas=True)


def score_columns(
    scores: PairScores, rows: np.ndarray, status: list[str], keys: pa.Array
) -> dict[str, pa.Array]:
    """The ``cp_*`` columns for every input row; rows not scored get nulls."""
    n = len(status)
    rematch_rows = np.full(n, -1, dtype=np.int64)
    has = scores.rematch_index >= 0
    rematch_rows[rows[has]] = rows[scores.rematch_index[has]]
    mask = pa.array(rematch_rows < 0)
    rematch_key = pc.if_else(
        mask, pa.nulls(n, keys.type), pc.take(keys, pa.array(np.maximum(rematch_rows, 0)))
    )
    return {
        P_CLEAN: _full_column(scores.p_clean, rows, n, pa.float32()),
        SOFT_LABEL: _full_column(scores.soft_label, rows, n, pa.float32()),
        SIMILARITY: _full_column(scores.similarity, rows, n, pa.float32()),
        REMATCH_KEY: rematch_key,
        REMATCH_SCORE: _full_column(scores.rematch_score, rows, n, pa.float32()),
        STATUS: pa.array(status, pa.string()),
    }


@dataclass
class ScoreRun:
    """What ``score_corpus`` did."""

    output: Path
    meta: RunMetadata
    encoded: dict[str, int] = field(default_factory=dict)
    status_counts: dict[str, int] = field(default_factory=dict)
    scores: PairScores | None = None
    """The method's per-pair arrays and trained heads (scored rows only, in their order)."""


def score_corpus(
    source: str | os.PathLike,
    output: str | os.PathLike | None = None,
    *,
    method: str = DEFAULT_METHOD,
    encoder: str = "offline",
    params: dict[str, Any] | None = None,
    seed: int = 0,
    device: str = "auto",
    key_col: str | None = None,
    image_col: str | None = None,
    text_col: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    rematch: bool = False,
    rematch_settings: dict[str, Any] | None = None,
    meta_source: str | os.PathLike | None = None,
    meta_keys: list[Any] | str | os.PathLike | None = None,
    max_image_pixels: int | None = None,
    image_emb_col: str | None = None,
    text_emb_col: str | None = None,
    save_scorer_to: str | os.PathLike | None = None,
    similarity_col: str | None = None,
) -> ScoreRun:
    """Read a corpus, embed it, fit a method, and write every row with its ``cp_*`` columns.

    Parameters
    ----------
    source
        A parquet / csv / jsonl file, a folder of parquet shards, or a glob.
    output
        The scores file; by default ``<name>.scores.parquet`` beside the input.
    method, params
        A registered method and its hyperparameters (checked before any work starts).
    encoder
        ``offline``, ``offline-large``, ``openclip:ARCH/TAG``, ``openclip:ARCH:PATH`` or ``precomputed``.
    rematch, rematch_settings
        Propose a partner for every pair below the threshold (:func:`rematch_scores`);
        settings override :data:`REMATCH_DEFAULTS`.
    meta_source, meta_keys
        A trusted set of clean pairs for the methods that learn from one (``mscn``): a table
        with the corpus's columns, or keys of corpus rows (a list, or a text file of them, one
        per line). The output never overwrites the corpus or the trusted set's files.
    max_image_pixels
        Images with more pixels are not decoded; their row's status says so (default:
        Pillow's limit, :data:`cleanpairs.io.images.DEFAULT_MAX_PIXELS`).
    key_col, image_col, text_col, image_emb_col, text_emb_col
        Column names for the roles where the defaults do not fit (see :func:`read_pairs`).
    save_scorer_to
        A folder to save the fitted scorer in (:func:`cleanpairs.io.scorers.save_scorer`), so that
        ``cleanpairs apply`` scores other pairs with it.
    similarity_col
        A column of the corpus that already holds each pair's image-text score (LAION's
        ``similarity``, DataComp's ``clip_b32_similarity_score``): the similarity method splits
        it, and nothing is embedded (:func:`score_from_column`).

    Raises
    ------
    CleanpairsError
        Bad input, an unknown method or encoder, or a bad parameter; nothing is written.
    """
    timings: dict[str, float] = {}
    start = time.perf_counter()
    # The spec, not the class: checking the name and parameters must not import the trainer.
    spec = get_spec(method)
    checked = spec.check_params(params or {})
    check_encoder_id(encoder)
    check_max_pixels(max_image_pixels)
    if rematch:
        check_rematch_params(**{**REMATCH_DEFAULTS, **(rematch_settings or {})})
    if meta_source is not None and meta_keys is not None:
        raise InputError("give the trusted set either as a table (--meta) or as keys (--meta-keys), not both")
    if spec.needs_trusted and meta_source is None and meta_keys is None:
        raise ParameterError(
            f"{method} learns from a trusted set of clean pairs: pass --meta trusted.parquet, "
            "or --meta-keys keys.txt naming rows of the corpus"
        )
    if not spec.needs_trusted and (meta_source is not None or meta_keys is not None):
        raise InputError(f"{method} does not learn from a trusted set; drop --meta / --meta-keys")
    if similarity_col is not None and (method != "similarity" or rematch or save_scorer_to is not None):
        raise ParameterError(
            "--similarity-col splits a score the corpus already carries: it goes with --method "
            "similarity, without --rematch or --save-scorer"
        )
    out = check_output_path(output if output is not None else default_output(source))
    corpus = read_pairs(
        source,
        key_col=key_col,
        image_col=image_col,
        text_col=text_col,
        image_emb_col=image_emb_col,
        text_emb_col=text_emb_col,
    )
    if similarity_col is not None:
        refuse_overwrite(out, corpus.sources)
        return score_from_column(corpus, out, similarity_col, seed=seed, start=start)
    meta_corpus = None
    if meta_source is not None:
        roles = corpus.roles
        meta_corpus = read_pairs(meta_source, image_col=roles.image, text_col=roles.caption)
    trusted_files = meta_corpus.sources if meta_corpus is not None else []
    if isinstance(meta_keys, (str, os.PathLike)):
        trusted_files, meta_keys = [Path(meta_keys)], read_keys(meta_keys)
    refuse_overwrite(out, [*corpus.sources, *trusted_files])
    if save_scorer_to is not None:
        check_output_path(save_scorer_to, directory=True)
        refuse_overwrite(save_scorer_to, [*corpus.sources, *trusted_files])
    # After the cheap checks (it imports torch), before any work: a run on precomputed shared
    # embeddings may never touch the device, and must still not accept one that is not there.
    from cleanpairs.device import resolve_device

    resolve_device(device)
    timings["read_s"] = time.perf_counter() - start

    tick = time.perf_counter()
    embedding = {"cache_dir": cache_dir, "device": device, "progress": progress}
    embedded = embed_corpus(corpus, encoder, **embedding, max_image_pixels=max_image_pixels)

    trusted = None
    if spec.needs_trusted:
        if meta_corpus is not None:
            trusted = embed_corpus(meta_corpus, encoder, **embedding, max_image_pixels=max_image_pixels).pairs
        else:
            trusted = _rows_with_keys(embedded.pairs, meta_keys or [])
    timings["embed_s"] = time.perf_counter() - tick

    tick = time.perf_counter()
    scorer = get_method(method)(seed=seed, device=device, **checked)
    scorer.fit(embedded.pairs, trusted)
    scores, used = scorer.score(), scorer.params_
    if save_scorer_to is not None:
        from cleanpairs.io.scorers import save_scorer

        manifest, tensors = scorer.fitted_state()
        save_scorer(save_scorer_to, {**manifest, "encoder": encoder}, tensors)
    timings["fit_s"] = time.perf_counter() - tick
    extra: dict[str, Any] = {}
    if trusted is not None:
        extra["trusted_pairs"] = len(trusted)
        extra["trusted_source"] = str(meta_source) if meta_source is not None else "corpus keys"
    if rematch:
        tick = time.perf_counter()
        extra["rematch"] = rematch_scores(embedded.pairs, scores, rematch_settings)
        timings["rematch_s"] = time.perf_counter() - tick

    columns = score_columns(scores, embedded.rows, embedded.status, corpus.keys())
    noise = float(np.mean(1.0 - scores.p_clean)) if len(scores.p_clean) else None
    warning = low_keep_warning(int(np.sum(scores.p_clean >= 0.5)), len(scores.p_clean), method)
    if warning is not None:
        extra["warnings"] = [warning]
    # The file records the time up to writing it; the write itself is added to the returned run.
    timings["total_s"] = time.perf_counter() - start
    meta = RunMetadata(
        version=cleanpairs.__version__,
        method=method,
        params=used,
        encoder=encoder,
        seed=seed,
        input=[str(p.resolve()) for p in corpus.sources],
        input_fingerprint=embedded.fingerprint,
        roles=corpus.roles.to_dict(),
        rows=len(corpus),
        scored_rows=len(embedded.rows),
        estimated_noise_rate=noise,
        timings=timings,
        extra={
            **corpus.folders().to_metadata(),
            "encoded": embedded.encoded,
            **scores.info,
            **extra,
        },
    )
    tick = time.perf_counter()
    write_scores(corpus.table, columns, meta, out)
    meta.timings = {**timings, "write_s": time.perf_counter() - tick, "total_s": time.perf_counter() - start}
    return ScoreRun(out, meta, embedded.encoded, dict(Counter(embedded.status)), scores)


def score_from_column(
    corpus: Corpus, out: Path, column: str, *, seed: int = 0, start: float | None = None
) -> ScoreRun:
    """Score a corpus by a similarity it already carries: a two-component Gaussian mixture over
    the column gives each pair's clean posterior, with no encoder at all.

    Rows with no value (null or NaN) keep their row with ``cp_status`` saying so.

    Raises
    ------
    InputError
        The column is missing, not numeric, or no row has a value.
    """
    from cleanpairs.core.mixture import gmm_clean_posterior

    start = time.perf_counter() if start is None else start
    table = corpus.table
    if column not in table.column_names:
        present = ", ".join(table.column_names)
        raise InputError(f"no column {column!r} for --similarity-col; columns present: {present}")
    kind = table.schema.field(column).type
    if not (pa.types.is_floating(kind) or pa.types.is_integer(kind)):
        raise InputError(f"--similarity-col {column!r} must hold numbers; it holds {kind}")
    values = table.column(column).to_numpy(zero_copy_only=False).astype(np.float64)
    ok = np.isfinite(values)
    if ok.sum() < 2:
        raise InputError(f"column {column!r} has a value in {int(ok.sum())} rows; at least 2 are needed")
    rows = np.flatnonzero(ok)
    p_clean = gmm_clean_posterior(values[rows], seed=seed)
    scores = PairScores.without_rematch(p_clean, p_clean, values[rows].astype(np.float32))
    status = [STATUS_OK if good else f"no value in {column}" for good in ok.tolist()]
    digest = hashlib.sha1(usedforsecurity=False)
    digest.update(pa.array(corpus.keys()).to_string().encode())
    digest.update(values.tobytes())
    meta = RunMetadata(
        version=cleanpairs.__version__,
        method="similarity",
        params={"similarity_col": column},
        encoder=f"column:{column}",
        seed=seed,
        input=[str(p.resolve()) for p in corpus.sources],
        input_fingerprint=digest.hexdigest(),
        roles=corpus.roles.to_dict(),
        rows=len(corpus),
        scored_rows=len(rows),
        estimated_noise_rate=float(np.mean(1.0 - p_clean)),
        timings={"total_s": time.perf_counter() - start},
        extra=corpus.folders().to_metadata(),
    )
    warning = low_keep_warning(int(np.sum(p_clean >= 0.5)), len(p_clean), "similarity")
    if warning is not None:
        meta.extra["warnings"] = [warning]
    write_scores(table, score_columns(scores, rows, status, corpus.keys()), meta, out)
    return ScoreRun(out, meta, {}, dict(Counter(status)), scores)


LOW_KEEP_SHARE = 0.05
"""Below this share of the scored pairs kept at 0.5, a run warns: it is almost never wanted."""


def low_keep_warning(kept: int, scored: int, method: str) -> str | None:
    """One line saying that ``filter --thresh 0.5`` would keep almost nothing, or ``None``."""
    if scored == 0 or kept >= LOW_KEEP_SHARE * scored:
        return None
    return (
        f"{method} would keep only {kept} of {scored} scored pairs at cp_p_clean >= 0.5 "
        f"({100 * kept / scored:.1f}%); look at `cleanpairs info` before filtering, or try another method"
    )


def _rows_with_keys(pairs: PairEmbeddings, keys: list[Any]) -> PairEmbeddings:
    """The scored pairs whose keys are listed (keys read from a text file arrive as strings)."""
    wanted = {str(k) for k in keys}
    rows = np.flatnonzero([str(k) in wanted for k in pairs.keys])
    if len(rows) < len(wanted):
        found = {str(pairs.keys[r]) for r in rows}
        missing = sorted(wanted - found)
        raise InputError(
            f"{len(missing)} trusted key(s) name no scored row of the corpus, e.g. {missing[0]!r}"
        )
    return PairEmbeddings(
        pairs.images, pairs.texts[rows], pairs.image_index[rows], pairs.keys[rows], pairs.aligned
    )


@dataclass
class ScoresSummary:
    """What ``cleanpairs info`` shows about a scores file."""

    meta: RunMetadata
    rows: int
    status_counts: dict[str, int]
    histogram: list[int]
    bin_edges: list[float]
    detection: dict[str, float] | None = None


def summarize_scores(
    path: str | os.PathLike, *, bins: int = 10, truth_col: str | None = None
) -> ScoresSummary:
    """Stream a scores file and count its rows, statuses and the histogram of ``cp_p_clean``.

    With ``truth_col`` (a boolean column, true for clean pairs), detection metrics against
    that truth are computed too.
    """
    handle, meta = open_scores(path)
    if truth_col is not None and truth_col not in handle.schema_arrow.names:
        raise InputError(
            f"no column {truth_col!r} in {path}; columns present: {', '.join(handle.schema_arrow.names)}"
        )
    edges = np.linspace(0.0, 1.0, bins + 1)
    hist = np.zeros(bins, dtype=np.int64)
    statuses: Counter[str] = Counter()
    rows = 0
    p_parts, truth_parts = [], []
    columns = [P_CLEAN, STATUS] + ([truth_col] if truth_col else [])
    for batch in iter_batches(handle, columns=columns):
        rows += batch.num_rows
        p = batch.column(P_CLEAN).to_numpy(zero_copy_only=False).astype(np.float64)
        hist += np.histogram(p[~np.isnan(p)], bins=edges)[0]
        statuses.update(batch.column(STATUS).to_pylist())
        if truth_col:
            p_parts.append(p)
            truth_parts.append(np.asarray(batch.column(truth_col).to_numpy(zero_copy_only=False), bool))
    detection = None
    if truth_col:
        from cleanpairs.metrics import detection_metrics  # scikit-learn, only when asked for

        detection = detection_metrics(np.concatenate(p_parts), np.concatenate(truth_parts))
    return ScoresSummary(meta, rows, dict(statuses), hist.tolist(), edges.tolist(), detection)
