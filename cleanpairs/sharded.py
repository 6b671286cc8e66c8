"""Score a corpus of many shards in two passes: fit a method once on a sample of the corpus,
then score every shard with the fitted scorer, one scores shard per input shard.

The output folder holds, beside the scores shards:

- ``_cleanpairs_run.json``: the run's settings and inputs. A folder whose run file names another
  method, scorer or input is refused instead of mixed; the same command again resumes.
- ``_scorer/``: the fitted scorer (``cleanpairs.io.scorers``), saved before any shard is scored,
  so a resumed run does not fit again.
- ``_fit_scores.parquet``: the fit's own scores of the pairs it was fit on (``row``: their
  global row), which their scores shards take. Where the fit sample is the whole corpus (a
  corpus that fits in memory) that is every pair, so that the shards hold exactly what a
  one-file ``score`` writes. Otherwise the method's training length is chosen on a held-out
  sample of the corpus (:func:`training_lengths`, :meth:`PairScorer.held_out_separation`) and
  the other pairs are scored with :meth:`PairScorer.score_pairs` by the scorer calibrated on
  that sample (:meth:`PairScorer.calibrate`), so that both groups sit on one scale.
- ``NAME.parquet`` + ``NAME.stats.json`` per input shard: the scores shard (every input row, the
  ``cp_*`` columns, run metadata) written atomically, then its completion marker
  (img2dataset's and datatrove's way): a shard with its marker is done and is skipped.

Timings go to the markers, never into the shards: the same input and seed give byte-identical
shards, resumed or not.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import cleanpairs
from cleanpairs.errors import CleanpairsError, InputError, ParameterError, first_line
from cleanpairs.io.atomic import atomic_output, check_output_path, refuse_overwrite
from cleanpairs.io.images import check_max_pixels
from cleanpairs.io.tables import TABLE_SUFFIXES, Corpus, expand_sources, read_pairs, read_table_file
from cleanpairs.schema import RunMetadata, resolve_roles

RUN_FILE = "_cleanpairs_run.json"
SCORER_FOLDER = "_scorer"
FIT_SCORES = "_fit_scores.parquet"
MARKER_SUFFIX = ".stats.json"
DEFAULT_FIT_PAIRS = 200_000
SAMPLE_STREAM = 0x5EED_F17
CALIBRATION_PAIRS = 10_000
"""Most pairs held out of the fit to calibrate the scorer on (half the fit sample where fewer)."""
FIT_SCHEME = (
    "own scores for the fit sample, the training length chosen and the rest calibrated on held-out pairs"
)
"""How a run combines the fit's own scores with ``score_pairs``; a folder of another scheme is
refused instead of mixed."""
FORMAT = "cleanpairs-sharded-scores"


@dataclass(frozen=True)
class ShardTask:
    """One input shard to score: plain data, so an executor can ship it to another process."""

    index: int
    source: str
    output: str
    marker: str
    run_folder: str
    scorer_folder: str
    settings: dict[str, Any]
    fit_rows: tuple[int, int] | None
    """The global rows ``[start, end)`` of this shard, where the method was fit in this run: its
    rows in the fit sample take the fit's own scores. ``None`` with a scorer given (every pair
    scored by ``score_pairs``)."""


@dataclass
class ShardedRun:
    """What :func:`score_shards` did."""

    output: Path
    method: str
    shards: int
    scored_shards: int
    skipped_shards: int
    rows: int
    scored_rows: int
    status_counts: dict[str, int]
    fitted: bool
    fit_pairs: int
    failed_shards: list[dict[str, str]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    rematch: dict[str, Any] | None = None
    """The rematch across shards' settings and counts, where it ran."""
    alignment: dict[str, Any] | None = None
    """Where a sample fit weighed the corpus alignment: ``aligned``, the pairs its moments were
    gathered over (``on_pairs``) and, for ``align=auto``, the ``image_share`` it decided on."""


def output_names(shards: list[Path]) -> list[str]:
    """The scores shard's file name of each input shard: its stem, made unique where two
    shards of a glob over several folders share one (``a/pairs`` -> ``a__pairs``)."""
    stems = [_stem(p) for p in shards]
    if len(set(stems)) == len(stems):
        return [f"{s}.parquet" for s in stems]
    root = Path(os.path.commonpath([os.path.abspath(p.parent) for p in shards]))
    names = []
    for path in shards:
        relative = Path(os.path.abspath(path)).relative_to(root)
        names.append("__".join([*relative.parent.parts, _stem(path)]) + ".parquet")
    return names


def _stem(path: Path) -> str:
    name = path.name
    for suffix in TABLE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _inputs_record(shards: list[Path]) -> list[dict[str, Any]]:
    """Each input shard's path, size and modification time: what the run file compares."""
    out = []
    for path in shards:
        stat = path.stat()
        out.append({"path": os.path.abspath(path), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    return out


def _shard_table(path: Path) -> pa.Table:
    """A shard that is not parquet (csv, jsonl, a webdataset tar), read as the pipeline reads it."""
    return read_pairs(path).table if path.suffix not in TABLE_SUFFIXES else read_table_file(path)


def count_rows(path: Path) -> int:
    """The rows of a shard (parquet from its footer, without reading the data)."""
    if path.suffix == ".parquet":
        try:
            return pq.ParquetFile(path).metadata.num_rows
        except (OSError, pa.ArrowException) as err:
            raise InputError(f"cannot read {path}: {first_line(err)}") from None
    return _shard_table(path).num_rows


def check_shards_agree(shards: list[Path], roles_options: dict[str, str | None]) -> None:
    """Raise :class:`InputError` naming the first shard whose columns do not play the same roles
    with the same types as the first shard's: mixed shards would be scored inconsistently."""
    first = None
    for path in shards:
        try:
            schema = pq.read_schema(path) if path.suffix == ".parquet" else _shard_table(path).schema
        except (OSError, pa.ArrowException) as err:
            raise InputError(f"cannot read {path}: {first_line(err)}") from None
        try:
            roles = resolve_roles(schema, **roles_options)
        except InputError as err:
            raise InputError(f"shard {path}: {err}") from None
        shape = {
            role: str(schema.field(name).type)
            for role, name in roles.to_dict().items()
            if name is not None and name in schema.names
        }
        if first is None:
            first = (path, roles.to_dict(), shape)
        elif (roles.to_dict(), shape) != first[1:]:
            raise InputError(
                f"shard {path} has other columns than {first[0]} (roles {roles.to_dict()} of types "
                f"{shape}, not {first[1]} of {first[2]}); every shard must have the same layout"
            )


def fit_sample_rows(counts: list[int], fit_pairs: int, seed: int) -> np.ndarray | None:
    """The global rows (sorted) the method is fit on, or ``None`` for every row of the corpus.

    A uniform sample without replacement, drawn with the run's seed, so the same corpus and seed
    always fit on the same rows.
    """
    total = int(sum(counts))
    if total <= fit_pairs:
        return None
    # A stream of its own: the run's seed also drives the method (and, in a benchmark, the noise
    # injected into the corpus); the same draws would pick the same rows for both.
    rng = np.random.default_rng([seed, SAMPLE_STREAM])
    return np.sort(rng.choice(total, size=fit_pairs, replace=False))


def calibration_rows(counts: list[int], sample: np.ndarray | None, seed: int) -> np.ndarray | None:
    """The global rows (sorted) held out of the fit to calibrate the scorer on: up to
    :data:`CALIBRATION_PAIRS` (and half the sample) of the rows the sample left out, or ``None``
    where the sample is the whole corpus."""
    if sample is None:
        return None
    rest = int(sum(counts)) - len(sample)
    size = min(rest, len(sample) // 2, CALIBRATION_PAIRS)
    if size < 2:
        return None
    rng = np.random.default_rng([seed, SAMPLE_STREAM, 1])
    # The p-th row outside the (sorted) sample is p plus the sample rows at or before it, found
    # without listing the rest of a corpus of any size.
    positions = rng.choice(rest, size=size, replace=False)
    before = sample - np.arange(len(sample))
    return np.sort(positions + np.searchsorted(before, positions, side="right"))


def read_sample(
    shards: list[Path], counts: list[int], rows: np.ndarray | None, roles_options: dict[str, str | None]
) -> Corpus:
    """The fit corpus: ``rows`` (global row numbers) of the shards, or all of them."""
    tables, sources, per_source = [], [], []
    starts = np.concatenate([[0], np.cumsum(counts)])
    roles = None
    for i, path in enumerate(shards):
        if rows is None:
            wanted = None
        else:
            lo, hi = np.searchsorted(rows, [starts[i], starts[i + 1]])
            if lo == hi:
                continue
            wanted = rows[lo:hi] - starts[i]
        corpus = read_pairs(path, **roles_options)
        roles = roles or corpus.roles
        table = corpus.table if wanted is None else corpus.table.take(pa.array(wanted))
        tables.append(table)
        sources.append(path)
        per_source.append(table.num_rows)
    table = pa.concat_tables(tables, promote_options="default")
    source_index = np.repeat(np.arange(len(sources), dtype=np.int32), per_source)
    return Corpus(table=table, roles=roles, sources=sources, source_index=source_index)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))


def _read_run_file(folder: Path) -> dict[str, Any] | None:
    path = folder / RUN_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"{path} is damaged ({err}); remove the folder {folder} or choose another") from None


def check_run_folder(folder: Path, run: dict[str, Any], *, sources: list[Path]) -> bool:
    """Check the output folder may take this run; return True when it resumes an earlier one.

    Raises
    ------
    InputError
        The folder holds files of another run (another method, parameters, scorer or input) or
        files cleanpairs did not write; or it is an input of the run.
    """
    check_output_path(folder, directory=True)
    refuse_overwrite(folder, sources)
    if not folder.exists():
        return False
    earlier = _read_run_file(folder)
    if earlier is None:
        others = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
        if others:
            raise InputError(
                f"{folder} already holds files that no cleanpairs run wrote ({', '.join(others[:3])}); "
                "choose an empty or new folder"
            )
        return False
    # A run from before ``align`` existed was fit unaligned.
    earlier, run = ({**r, "params": {"align": "none", **(r.get("params") or {})}} for r in (earlier, run))
    keys = ("method", "params", "encoder", "seed", "inputs", "fit_pairs", "scorer", "roles_options")
    for key in (*keys, "fit_scheme", "rematch"):
        if earlier.get(key) != run.get(key):
            raise InputError(
                f"{folder} holds shards of another run ({key} differs: {earlier.get(key)!r} there, "
                f"{run.get(key)!r} now); choose another folder, or remove it to start again"
            )
    return True


def _scorer_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for name in sorted(p.name for p in folder.iterdir()):
        digest.update(name.encode())
        digest.update((folder / name).read_bytes())
    return digest.hexdigest()[:16]


def training_lengths(
    params: dict[str, Any], given: Collection[str] = (), name: str = "epochs"
) -> tuple[int, ...]:
    """The training lengths (the value of the method's length parameter ``name``, its
    :attr:`~cleanpairs.methods.base.MethodSpec.length_param`) a fit on a sample chooses among on
    the held-out pairs: the method's and half of it (rounded up), or none to choose among where
    the method has no such parameter or the user set it (``given``: the parameters the user named).

    On a sample the heads see fewer pairs as often as on the whole corpus and memorise its noisy
    captions sooner; which length ranks unseen pairs better depends on the sample's size and
    noise, so it is measured (``docs/methods.md``, "Fit on a sample, score the corpus").
    """
    if name not in params or name in given:
        return ()
    full = int(params[name])
    return tuple(dict.fromkeys((full, -(-full // 2))))


def fit_on_sample(
    pairs: Any,
    held_out: Any | None,
    *,
    method: str,
    params: dict[str, Any],
    lengths: tuple[int, ...],
    seed: int,
    device: str,
    moments: Any | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Fit ``method`` on ``pairs``; with ``held_out`` pairs and ``lengths`` to choose among, once
    per training length, keeping the fit whose statistic the held-out pairs separate best
    (:meth:`PairScorer.held_out_separation`; a tie keeps the longer). ``moments`` are the whole
    corpus's cross-moments, for a method with ``align`` set (``cca``, ``auto``). Returns the
    fitted scorer and what the run file records of the choice."""
    from cleanpairs.methods import get_method, get_spec

    if held_out is None or len(lengths) < 2:
        return get_method(method)(seed=seed, device=device, **params).fit(pairs, moments=moments), {}
    length_param = get_spec(method).length_param
    separation: dict[int, float] = {}
    best = None
    for epochs in sorted(lengths, reverse=True):
        scorer = get_method(method)(seed=seed, device=device, **{**params, length_param: epochs})
        scorer.fit(pairs, moments=moments)
        separation[epochs] = scorer.held_out_separation(held_out)
        if best is None or separation[epochs] > separation[best[0]]:
            best = (epochs, scorer)
        del scorer  # a losing fit is freed before the next one is made
    epochs, scorer = best
    measured = {str(k): round(v, 6) for k, v in separation.items()}
    return scorer, {"fit_epochs": epochs, "held_out_separation": measured}


def fit_and_save(
    corpus: Corpus,
    folder: Path,
    *,
    rows: np.ndarray,
    calibration: Corpus | None,
    method: str,
    params: dict[str, Any],
    lengths: tuple[int, ...] = (),
    encoder: str,
    seed: int,
    device: str,
    cache_dir: str | os.PathLike | None,
    progress: bool,
    max_image_pixels: int | None,
    moments: Any | None = None,
) -> dict[str, Any]:
    """Embed the fit corpus, fit the method (choosing among the training ``lengths`` on the
    held-out ``calibration`` pairs, if any; aligned on the corpus's ``moments`` where given),
    calibrate it on those pairs, save the scorer and the fit's own scores of every pair
    (``rows``: their global rows) into ``folder``. Returns what the run file records."""
    from cleanpairs.encoders import embed_corpus
    from cleanpairs.io.scorers import save_scorer

    def embedded_pairs(part: Corpus) -> Any:
        return embed_corpus(part, encoder, cache_dir=cache_dir, device=device, progress=progress,
                            max_image_pixels=max_image_pixels)  # fmt: skip

    embedded = embedded_pairs(corpus)
    held_out = None if calibration is None else embedded_pairs(calibration)
    if held_out is not None and len(held_out.rows) < 2:
        held_out = None
    scorer, choice = fit_on_sample(
        embedded.pairs,
        None if held_out is None else held_out.pairs,
        method=method,
        params=params,
        lengths=lengths,
        seed=seed,
        device=device,
        moments=moments,
    )
    record: dict[str, Any] = {"fit_pairs_used": len(embedded.rows), "calibration_pairs": 0, **choice}
    if held_out is not None:
        scorer.calibrate(held_out.pairs)
        record["calibration_pairs"] = len(held_out.rows)
    manifest, tensors = scorer.fitted_state()
    save_scorer(folder / SCORER_FOLDER, {**manifest, "encoder": encoder}, tensors)
    scores = scorer.score()
    names = ("p_clean", "soft_label", "similarity")
    own = {name: np.full(len(corpus), np.nan, dtype=np.float32) for name in names}
    for name, values in own.items():
        values[embedded.rows] = getattr(scores, name)
    table = pa.table(
        {"row": pa.array(np.asarray(rows, dtype=np.int64))}
        | {name: pa.array(values, from_pandas=True) for name, values in own.items()}
    )
    with atomic_output(folder / FIT_SCORES) as tmp:
        pq.write_table(table, tmp)
    return {**record, "fit_info": _jsonable(scores.info)}


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


@functools.lru_cache(maxsize=1)
def _scorer_for(folder: str, device: str) -> Any:
    """The scorer saved in ``folder``, loaded once per process (a worker scores many shards)."""
    from cleanpairs.methods import load_scorer

    return load_scorer(folder, device=device)


def score_shard(task: ShardTask) -> dict[str, Any]:
    """The per-shard step: read, embed, score, write the scores shard, then its marker.

    A top-level function of plain data in and out, so any executor can run it.
    """
    from cleanpairs.encoders import embed_corpus
    from cleanpairs.io.scores import write_scores
    from cleanpairs.pipeline import score_columns

    start = time.perf_counter()
    s = task.settings
    corpus = read_pairs(task.source, **s["roles_options"])
    embedded = embed_corpus(
        corpus,
        s["encoder"],
        cache_dir=s["cache_dir"],
        device=s["device"],
        progress=False,
        max_image_pixels=s["max_image_pixels"],
    )
    scores = _scores(task, embedded.rows, embedded.pairs, len(corpus))
    columns = score_columns(scores, embedded.rows, embedded.status, corpus.keys())
    meta = RunMetadata(
        version=cleanpairs.__version__,
        method=s["method"],
        params=s["params_used"],
        encoder=s["encoder"],
        seed=s["seed"],
        input=[os.path.abspath(task.source)],
        input_fingerprint=embedded.fingerprint,
        roles=corpus.roles.to_dict(),
        rows=len(corpus),
        scored_rows=len(embedded.rows),
        estimated_noise_rate=float(np.mean(1.0 - scores.p_clean)) if len(scores.p_clean) else None,
        timings={},
        extra={**corpus.folders().to_metadata(), "shard": task.index, "scorer": s["scorer"]},
    )
    if s.get("rematch") is not None:
        _save_flagged(task, embedded, corpus, scores)
    write_scores(corpus.table, columns, meta, Path(task.output))
    stats = {
        "shard": task.index,
        "source": os.path.abspath(task.source),
        "output": os.path.basename(task.output),
        "rows": len(corpus),
        "scored_rows": len(embedded.rows),
        "kept_at_half": int(np.sum(scores.p_clean >= 0.5)),
        "status": dict(Counter(embedded.status)),
        "encoded": embedded.encoded,
        "seconds": round(time.perf_counter() - start, 3),
    }
    _write_json(Path(task.marker), stats)
    return stats


def _own_scores(run_folder: str, fit_rows: tuple[int, int], rows: int) -> dict[str, np.ndarray]:
    """The fit's own scores of a shard's rows (NaN for rows not fit on), from ``FIT_SCORES``."""
    lo, hi = fit_rows
    fit = pq.read_table(Path(run_folder) / FIT_SCORES)
    where = fit.column("row").to_numpy()
    inside = (where >= lo) & (where < hi)
    own = {}
    for name in ("p_clean", "soft_label", "similarity"):
        values = np.full(rows, np.nan, dtype=np.float32)
        values[where[inside] - lo] = fit.column(name).to_numpy(zero_copy_only=False)[inside]
        own[name] = values
    return own


def _scores(task: ShardTask, rows: np.ndarray, pairs: Any, n_rows: int) -> Any:
    """A shard's scores of its scorable ``rows``: the fit's own for the pairs fit on, the fitted
    scorer's :meth:`score_pairs` for the others.

    ``score_pairs`` sees every pair of the shard in one call, those fit on too, so that a caption
    is measured against all the other captions of its image in the shard (the methods with caption
    agreement), as ``apply`` on the same shard measures it; only the unseen pairs' scores are kept.
    """
    from cleanpairs.contract import PairScores

    names = ("p_clean", "soft_label", "similarity")
    kept = {name: np.full(len(rows), np.nan, dtype=np.float32) for name in names}
    unseen = np.arange(len(rows))
    if task.fit_rows is not None:
        own = _own_scores(task.run_folder, task.fit_rows, n_rows)
        for name in names:
            kept[name] = own[name][rows]
        unseen = np.flatnonzero(np.isnan(kept["p_clean"]))
    if len(unseen):
        scorer = _scorer_for(task.scorer_folder, task.settings["device"])
        scored = scorer.score_pairs(pairs)
        for name in names:
            kept[name][unseen] = getattr(scored, name)[unseen]
    return PairScores.without_rematch(*(kept[name] for name in names))


def _save_flagged(task: ShardTask, embedded: Any, corpus: Corpus, scores: Any) -> None:
    """Keep the pairs this shard flags for the rematch across shards (``cleanpairs.sharded_rematch``)."""
    from cleanpairs.sharded_rematch import save_flagged

    s = task.settings
    # The shard's scores carry no heads (the fit's own and score_pairs' are mixed); the saved
    # scorer's heads are the fit's.
    scorer = _scorer_for(task.scorer_folder, s["device"])
    heads = scorer.score_pairs(embedded.pairs.take(np.zeros(0, dtype=np.int64))).heads
    save_flagged(task.run_folder, os.path.basename(task.output), embedded.pairs, embedded.rows,
                 corpus.keys(), scores.p_clean, heads, s["rematch"]["threshold"])  # fmt: skip


def score_shards(
    source: str | os.PathLike,
    output: str | os.PathLike,
    *,
    method: str | None = None,
    encoder: str = "offline",
    params: dict[str, Any] | None = None,
    seed: int = 0,
    device: str = "auto",
    key_col: str | None = None,
    image_col: str | None = None,
    text_col: str | None = None,
    image_emb_col: str | None = None,
    text_emb_col: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    fit_pairs: int = DEFAULT_FIT_PAIRS,
    scorer: str | os.PathLike | None = None,
    save_scorer_to: str | os.PathLike | None = None,
    engine: str = "local",
    ray_address: str | None = None,
    skip_bad_shards: bool = False,
    max_image_pixels: int | None = None,
    rematch: bool = False,
    rematch_settings: dict[str, Any] | None = None,
) -> ShardedRun:
    """Score every shard of ``source`` into the folder ``output``, one scores shard per shard.

    Without ``scorer``, the method is fit on ``fit_pairs`` pairs drawn uniformly from the corpus
    (the whole corpus when it is smaller: then every pair gets the fit's own scores, as a one-file
    ``score`` gives) and saved in ``output/_scorer`` (and in ``save_scorer_to``) before any shard
    is scored; a sample fit with the method's ``align`` set (``cca``, ``auto``) first sums the
    cross-moments of every pair of every shard (:mod:`cleanpairs.sharded_moments`), so the
    alignment is the whole corpus's. With ``scorer`` (a folder saved by an earlier run), nothing
    is fit. A run into a folder of an earlier run with the same settings and inputs resumes:
    finished shards (those with a marker) are skipped. With ``rematch``, the flagged pairs of all
    shards are then rematched across shards (:mod:`cleanpairs.sharded_rematch`).

    Raises
    ------
    CleanpairsError
        Bad input, settings or output folder, checked before anything is written; a shard that
        cannot be read (naming it) unless ``skip_bad_shards``.
    """
    from cleanpairs.methods import get_spec

    start = time.perf_counter()
    out = Path(output)
    if fit_pairs < 2:
        raise ParameterError(f"--fit-pairs must be at least 2; got {fit_pairs}")
    check_max_pixels(max_image_pixels)
    from cleanpairs.engines import check_engine

    check_engine(engine, ray_address=ray_address)
    roles_options = {
        "key_col": key_col,
        "image_col": image_col,
        "text_col": text_col,
        "image_emb_col": image_emb_col,
        "text_emb_col": text_emb_col,
    }
    shards = expand_sources(source)
    if scorer is not None:
        from cleanpairs.io.scorers import load_scorer_files

        manifest, _ = load_scorer_files(scorer)
        method, params_used = str(manifest["method"]), manifest.get("params", {})
        encoder, seed = str(manifest.get("encoder", encoder)), int(manifest.get("seed", seed))
        scorer_id = _scorer_digest(Path(scorer))
    else:
        if method is None:
            raise ParameterError("name a method to fit, or a fitted scorer to apply")
        spec = get_spec(method)
        params_used = spec.check_params(params or {})
        if spec.needs_trusted:
            raise ParameterError(
                f"{method} learns from a trusted set; score a folder of shards with it by fitting on "
                "one file first (score FILE --save-scorer DIR), then `cleanpairs apply DIR SHARDS/`"
            )
        scorer_id = None
    from cleanpairs.encoders import check_encoder_id

    check_encoder_id(encoder)
    names = output_names(shards)
    run = {
        "format": FORMAT,
        "version": cleanpairs.__version__,
        "method": method,
        "params": params_used,
        "encoder": encoder,
        "seed": seed,
        "fit_pairs": fit_pairs if scorer is None else None,
        "fit_scheme": FIT_SCHEME if scorer is None else None,
        "scorer": scorer_id,
        "roles_options": roles_options,
        "inputs": _inputs_record(shards),
    }
    if rematch:
        from cleanpairs.sharded_rematch import rematch_settings as checked_rematch

        run["rematch"] = checked_rematch(rematch_settings)
    resuming = check_run_folder(out, run, sources=shards)
    if save_scorer_to is not None:
        check_output_path(save_scorer_to, directory=True)
        refuse_overwrite(save_scorer_to, shards)
    counts, unreadable = _count_all(shards, skip=skip_bad_shards)
    if unreadable:
        bad = {f["source"] for f in unreadable}
        kept = [i for i, p in enumerate(shards) if os.path.abspath(p) not in bad]
        shards, names, counts = [shards[i] for i in kept], [names[i] for i in kept], [counts[i] for i in kept]
    if not resuming and not skip_bad_shards:
        check_shards_agree(shards, roles_options)
    from cleanpairs.device import resolve_device

    resolve_device(device)
    out.mkdir(parents=True, exist_ok=True)
    if not resuming:
        _write_json(out / RUN_FILE, {**run, "state": "fitting"})
    timings: dict[str, float] = {}
    embedding = {
        "encoder": encoder,
        "cache_dir": None if cache_dir is None else os.fspath(cache_dir),
        "device": device,
        "max_image_pixels": max_image_pixels,
        "roles_options": roles_options,
    }

    sample = fit_sample_rows(counts, fit_pairs, seed) if scorer is None else np.zeros(0, dtype=np.int64)
    fitted = False
    fit_record: dict[str, Any] = {}
    scorer_folder = out / SCORER_FOLDER
    if scorer is not None:
        scorer_folder = Path(scorer).resolve()
    elif not (scorer_folder / "scorer.json").exists() or not (out / FIT_SCORES).exists():
        tick = time.perf_counter()
        moments = None
        if sample is not None and params_used["align"] != "none":
            from cleanpairs.sharded_moments import corpus_moments

            moments = corpus_moments(shards, embedding, engine=engine, ray_address=ray_address,
                                     skip=skip_bad_shards, progress=progress)  # fmt: skip
        corpus = read_sample(shards, counts, sample, roles_options)
        held_out = calibration_rows(counts, sample, seed)
        fit_record = fit_and_save(
            corpus,
            out,
            rows=np.arange(int(sum(counts))) if sample is None else sample,
            calibration=None if held_out is None else read_sample(shards, counts, held_out, roles_options),
            method=method,
            params=params_used,
            lengths=training_lengths(params_used, set(params or {}), get_spec(method).length_param),
            encoder=encoder,
            seed=seed,
            device=device,
            cache_dir=cache_dir,
            progress=progress,
            max_image_pixels=max_image_pixels,
            moments=moments,
        )
        if moments is not None:
            fit_record["aligned_on_pairs"] = moments.count
        fitted = True
        timings["fit_s"] = time.perf_counter() - tick
        run_now = {**run, "state": "scoring", **fit_record}
        _write_json(out / RUN_FILE, run_now)
    if save_scorer_to is not None and scorer is None:
        from cleanpairs.io.scorers import load_scorer_files, save_scorer

        save_scorer(save_scorer_to, *load_scorer_files(scorer_folder))

    # A sample fit that chose a shorter training length fit with it; the shards' metadata says
    # so (the run file's params stay those asked for, which a resumed run must match).
    chosen = (_read_run_file(out) or run).get("fit_epochs")
    if chosen is not None:
        params_used = {**params_used, get_spec(method).length_param: chosen}
    settings = {
        **embedding,
        "method": method,
        "params_used": params_used,
        "seed": seed,
        "scorer": scorer_id or _scorer_digest(scorer_folder),
        "rematch": run.get("rematch"),
    }
    starts = np.concatenate([[0], np.cumsum(counts)]).tolist()
    tasks, skipped = [], 0
    for i, (path, name) in enumerate(zip(shards, names, strict=True)):
        target, marker = out / name, out / (name[: -len(".parquet")] + MARKER_SUFFIX)
        if marker.exists() and target.exists():
            skipped += 1
            continue
        fit_rows = (int(starts[i]), int(starts[i + 1])) if scorer is None else None
        tasks.append(
            ShardTask(
                i,
                os.fspath(path),
                os.fspath(target),
                os.fspath(marker),
                os.fspath(out),
                os.fspath(scorer_folder),
                settings,
                fit_rows,
            )
        )
    if rematch and tasks:
        from cleanpairs.sharded_rematch import forget_matches

        forget_matches(out)
    tick = time.perf_counter()
    results, failed = _run(
        tasks, engine=engine, ray_address=ray_address, skip=skip_bad_shards, progress=progress
    )
    failed = [*unreadable, *failed]
    timings["score_s"] = time.perf_counter() - tick
    record = _read_run_file(out) or run
    if rematch:
        from cleanpairs.sharded_rematch import rematch_shards

        tick = time.perf_counter()
        done = [n for n in names if (out / (n[: -len(".parquet")] + MARKER_SUFFIX)).exists()]
        record["rematch_info"] = rematch_shards(
            out, done, run["rematch"], engine=engine, ray_address=ray_address, progress=progress
        )
        timings["rematch_s"] = time.perf_counter() - tick
    # A shard that failed before and was scored now is no longer failed.
    failures = {f["source"]: f for f in record.get("failed_shards", [])}
    for result in results:
        failures.pop(result["source"], None)
    failures.update((f["source"], f) for f in failed)
    record["failed_shards"] = [failures[source] for source in sorted(failures)]
    record["state"] = "done" if not record["failed_shards"] else "done with failed shards"
    totals = _totals(out, names)
    from cleanpairs.pipeline import low_keep_warning

    warning = low_keep_warning(totals["kept_at_half"], totals["scored_rows"], method)
    record["warnings"] = [warning] if warning else []
    _write_json(out / RUN_FILE, record)
    timings["total_s"] = time.perf_counter() - start
    return ShardedRun(
        output=out,
        method=method,
        shards=len(shards),
        scored_shards=len(results),
        skipped_shards=skipped,
        rows=totals["rows"],
        scored_rows=totals["scored_rows"],
        status_counts=totals["status"],
        fitted=fitted,
        fit_pairs=int(record.get("fit_pairs_used", 0)),
        failed_shards=record["failed_shards"],
        timings=timings,
        warnings=record["warnings"],
        rematch=record.get("rematch_info"),
        alignment=_alignment_of(record),
    )


def _alignment_of(record: dict[str, Any]) -> dict[str, Any] | None:
    """What the run file says of a sample fit's corpus alignment (``None``: none was weighed)."""
    on_pairs = record.get("aligned_on_pairs")
    if on_pairs is None:
        return None
    decision = (record.get("fit_info") or {}).get("align", {"aligned": True})
    return {**decision, "on_pairs": int(on_pairs)}


def _count_all(shards: list[Path], *, skip: bool) -> tuple[list[int], list[dict[str, str]]]:
    """Each shard's rows; a shard that cannot be read stops the run naming it, or with ``skip``
    is recorded (its count 0) and left out."""
    counts, failed = [], []
    for path in shards:
        try:
            counts.append(count_rows(path))
        except CleanpairsError as err:
            if not skip:
                raise InputError(f"shard {path}: {err}") from None
            counts.append(0)
            failed.append({"source": os.path.abspath(path), "error": str(err)})
    return counts, failed


def _score_or_record(task: ShardTask, *, skip: bool) -> dict[str, Any]:
    """The shard step as the engines run it: a shard that fails with a :class:`CleanpairsError`
    stops the run naming the shard, or with ``skip`` comes back as a failure record."""
    try:
        return score_shard(task)
    except CleanpairsError as err:
        if not skip:
            raise InputError(f"shard {task.source}: {err}") from None
        return {"failed": True, "source": os.path.abspath(task.source), "error": str(err)}


def _run(
    tasks: list[ShardTask], *, engine: str, ray_address: str | None, skip: bool, progress: bool
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Run the shard step over ``tasks`` on the engine; return the finished and failed shards."""
    from cleanpairs.engines import run_tasks

    step = partial(_score_or_record, skip=skip)
    done = run_tasks(step, tasks, engine=engine, ray_address=ray_address, progress=progress,
                     description="scoring shards")  # fmt: skip
    results = [r for r in done if not r.get("failed")]
    failed = [{"source": r["source"], "error": r["error"]} for r in done if r.get("failed")]
    return results, failed


def _totals(folder: Path, names: list[str]) -> dict[str, Any]:
    rows = scored = kept = 0
    status: Counter = Counter()
    for name in names:
        marker = folder / (name[: -len(".parquet")] + MARKER_SUFFIX)
        if marker.exists():
            stats = json.loads(marker.read_text())
            rows += stats["rows"]
            scored += stats["scored_rows"]
            kept += stats.get("kept_at_half", 0)
            status.update(stats["status"])
    return {"rows": rows, "scored_rows": scored, "kept_at_half": kept, "status": dict(status)}


__all__ = [
    "DEFAULT_FIT_PAIRS",
    "ShardTask",
    "ShardedRun",
    "calibration_rows",
    "fit_on_sample",
    "fit_sample_rows",
    "output_names",
    "score_shard",
    "score_shards",
    "training_lengths",
]
