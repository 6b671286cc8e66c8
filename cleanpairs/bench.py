"""The benchmark runner: a clean corpus x injected noise x methods x seeds.

For every run it injects a known noise (:mod:`cleanpairs.noise`) into the corpus's embeddings,
fits the method, and measures what a user picks a method by: detection of the mismatched pairs
(AUROC, AP, F1 at 0.5, estimated vs true noise rate), the rematches' accuracy, the retrieval
quality of the method's own heads and, downstream, of a retrieval model trained on the corpus
the method filtered, next to one trained on the noisy corpus unfiltered and on the clean corpus
(the ceiling). The compute here takes and returns arrays and dicts; :func:`bench_corpus` is the
glue that reads the corpus and writes the results folder.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cleanpairs.core.rematch import REMATCH_DEFAULTS, rematch_in_shared_space
from cleanpairs.errors import InputError, ParameterError
from cleanpairs.methods import PairEmbeddings, available_methods, get_method
from cleanpairs.metrics import detection_metrics, rematch_metrics, retrieval_metrics
from cleanpairs.noise import InjectedNoise, inject_noise, parse_noise_specs

UNFILTERED = "unfiltered"
PERFECT = "perfect"
CLEAN = "clean"
REFERENCES = {
    UNFILTERED: "noisy corpus, unfiltered",
    PERFECT: "its clean pairs only (perfect filter)",
    CLEAN: "clean corpus (ceiling)",
}
"""Pseudo-methods of the downstream table, in the order they close it: the noisy corpus as it
is; the noisy corpus with exactly its mismatched pairs removed (a perfect filter: what a method
that only removes pairs aims at; rematched pairs, or the luck of training, can pass it); the
clean corpus before the noise, the ceiling."""

COLUMNS = [
    "method", "kind", "rate", "seed", "pairs", "true_noise_rate", "estimated_noise_rate",
    "auroc", "ap", "f1", "precision", "recall", "fit_s", "rematch_s", "wall_s", "epochs",
    "rematch_accuracy", "rematch_coverage", "export_rematch_accuracy", "export_rematch_coverage",
    "heads_rsum", "kept", "downstream_rows", "downstream_rsum", "downstream_s",
]  # fmt: skip

EXPORT_REMATCH_THRESH = 0.15
"""The rematches an ``export --rematch`` keeps by default; reported beside all proposals."""


@dataclass(frozen=True)
class NoiseCase:
    """One injected noise: its kind, rate and seed."""

    kind: str
    rate: float
    seed: int

    @property
    def label(self) -> str:
        return f"{self.kind} {self.rate:.0%}"

    def run_name(self, method: str) -> str:
        return f"{method}-{self.kind}-{self.rate:g}-seed{self.seed}"


@dataclass
class BenchSetup:
    """What every run of a benchmark shares.

    Attributes
    ----------
    params
        Hyperparameters per method name (the method's defaults otherwise).
    trusted
        Clean pairs for the methods that learn from a trusted set (``mscn``).
    evaluation
        A clean corpus for retrieval: the heads' rSum and the downstream models' rSum. Without
        one, retrieval is not measured.
    thresh
        The filter's threshold on ``cp_p_clean`` for the downstream training set.
    """

    methods: list[str]
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    trusted: PairEmbeddings | None = None
    evaluation: PairEmbeddings | None = None
    rematch: bool = True
    downstream: bool = True
    thresh: float = 0.5
    device: str = "auto"


def noise_cases(specs: list[str], seeds: list[int]) -> list[NoiseCase]:
    """Every (kind, rate) of the ``--noise`` specs for every seed, seeds innermost."""
    if not seeds:
        raise ParameterError("the benchmark needs at least one seed")
    return [NoiseCase(kind, rate, seed) for kind, rate in parse_noise_specs(specs) for seed in seeds]


def resolve_methods(names: list[str], *, have_trusted: bool) -> tuple[list[str], list[str]]:
    """The methods to run and those left out; ``all`` means every registered method.

    With ``all``, methods that need a trusted set are left out when none is given; a method
    named explicitly without its trusted set is an error.
    """
    everything = "all" in names
    wanted = available_methods() if everything else list(dict.fromkeys(names))
    for name in wanted:
        get_method(name)
    skipped = [m for m in wanted if get_method(m).needs_trusted and not have_trusted]
    if skipped and not everything:
        raise ParameterError(
            f"{skipped[0]} learns from a trusted set of clean pairs: pass --meta trusted.parquet"
        )
    return [m for m in wanted if m not in skipped], skipped


def with_noise(clean: PairEmbeddings, noise: InjectedNoise) -> PairEmbeddings:
    """The corpus with each pair carrying the caption the noise gave it."""
    return PairEmbeddings(
        clean.images, clean.texts[noise.caption_source], clean.image_index, clean.keys, clean.aligned
    )


def inject(clean: PairEmbeddings, case: NoiseCase) -> tuple[PairEmbeddings, InjectedNoise]:
    """Inject ``case``'s noise into a clean corpus; ``hard`` noise finds near captions by the texts."""
    noise = inject_noise(case.kind, clean.image_index, case.rate, seed=case.seed, texts=clean.texts)
    return with_noise(clean, noise), noise


def heads_rsum(heads: Any, evaluation: PairEmbeddings | None) -> float | None:
    """rSum of retrieval on the clean evaluation corpus with ``heads``' embeddings."""
    if heads is None or evaluation is None:
        return None
    images, texts = heads.embed_images(evaluation.images), heads.embed_texts(evaluation.texts)
    return retrieval_metrics(images, texts, evaluation.image_index)["rsum"]


def downstream(pairs: PairEmbeddings, setup: BenchSetup, seed: int, **selection: Any) -> dict[str, Any]:
    """Train the final retrieval model on ``pairs`` (filtered by ``selection`` when given) and
    measure it on the evaluation corpus."""
    from cleanpairs.retrieval import evaluate_retrieval, train_retrieval, training_pairs

    tick = time.perf_counter()
    try:
        chosen = training_pairs(pairs, **selection) if selection else pairs
    except ParameterError:
        # The method kept (almost) nothing: there is no model to train, a gap in the table.
        return {"downstream_rows": 0, "downstream_rsum": float("nan"), "downstream_s": 0.0}
    model = train_retrieval(chosen, seed=seed, device=setup.device)
    rsum = evaluate_retrieval(model, setup.evaluation)["rsum"]
    return {
        "downstream_rows": len(chosen),
        "downstream_rsum": rsum,
        "downstream_s": time.perf_counter() - tick,
    }


def run_method(
    noisy: PairEmbeddings, noise: InjectedNoise, case: NoiseCase, method: str, setup: BenchSetup
) -> tuple[dict[str, Any], np.ndarray]:
    """Fit ``method`` on one noisy corpus and measure it; return its row and its ``p_clean``."""
    scorer = get_method(method)(seed=case.seed, device=setup.device, **setup.params.get(method, {}))
    tick = time.perf_counter()
    scores = scorer.fit(noisy, setup.trusted).score()
    fit_s = time.perf_counter() - tick
    detection = detection_metrics(scores.p_clean, noise.is_clean)
    row: dict[str, Any] = {
        "method": method,
        "kind": case.kind,
        "rate": case.rate,
        "seed": case.seed,
        "pairs": len(noisy),
        **{k: detection[k] for k in ("true_noise_rate", "estimated_noise_rate", "auroc", "ap", "f1")},
        **{k: detection[k] for k in ("precision", "recall")},
        "fit_s": fit_s,
        "rematch_s": 0.0,
        "epochs": scores.info.get("epochs_run", 0),
        "heads_rsum": heads_rsum(scores.heads, setup.evaluation),
    }
    if setup.rematch:
        tick = time.perf_counter()
        found = rematch_in_shared_space(noisy, scores.heads, scores.p_clean, **REMATCH_DEFAULTS)
        row["rematch_s"] = time.perf_counter() - tick
        truth = (found.index, found.score, noisy.image_index, noisy.image_index[noise.caption_source])
        every, exported = rematch_metrics(*truth), rematch_metrics(*truth, min_score=EXPORT_REMATCH_THRESH)
        row.update(rematch_accuracy=every["accuracy"], rematch_coverage=every["coverage"])
        row.update(export_rematch_accuracy=exported["accuracy"], export_rematch_coverage=exported["coverage"])
        scores.rematch_index, scores.rematch_score = found.index, found.score
    row["wall_s"] = row["fit_s"] + row["rematch_s"]
    row["kept"] = int((scores.p_clean >= setup.thresh).sum())
    if setup.downstream and setup.evaluation is not None:
        selection: dict[str, Any] = {"p_clean": scores.p_clean, "thresh": setup.thresh}
        if setup.rematch:
            selection.update(rematch_index=scores.rematch_index, rematch_score=scores.rematch_score)
            selection["rematch_thresh"] = EXPORT_REMATCH_THRESH
        row.update(downstream(noisy, setup, case.seed, **selection))
    return row, scores.p_clean


def baseline_rows(
    clean: PairEmbeddings,
    noisy: PairEmbeddings,
    noise: InjectedNoise,
    case: NoiseCase,
    setup: BenchSetup,
    names: Collection[str] = tuple(REFERENCES),
) -> list[dict[str, Any]]:
    """The downstream references ``names`` (of :data:`REFERENCES`) of a noise case."""
    truth = {"p_clean": noise.is_clean.astype(np.float32), "thresh": 0.5}
    rows = []
    for name, pairs, selection in ((UNFILTERED, noisy, {}), (PERFECT, noisy, truth), (CLEAN, clean, {})):
        if name not in names:
            continue
        row = {"method": name, "kind": case.kind, "rate": case.rate, "seed": case.seed, "pairs": len(pairs)}
        row["true_noise_rate"] = noise.noise_rate if name == UNFILTERED else 0.0
        rows.append({**row, **downstream(pairs, setup, case.seed, **selection)})
    return rows


RowSink = Callable[[dict[str, Any], np.ndarray | None, np.ndarray | None], None]


def run_benchmark(
    clean: PairEmbeddings,
    cases: list[NoiseCase],
    setup: BenchSetup,
    *,
    done: set[tuple[str, str, float, int]] = frozenset(),  # type: ignore[assignment]
    on_row: RowSink | None = None,
) -> list[dict[str, Any]]:
    """Run every method on every noise case of a clean corpus; return the rows of this call.

    ``done`` holds the ``(method, kind, rate, seed)`` of runs already made (resuming); they are
    skipped. ``on_row(row, p_clean, is_clean)`` sees each row as soon as it is measured.
    """
    rows = []
    want_baselines = setup.downstream and setup.evaluation is not None
    for case in cases:
        names = [m for m in setup.methods if (m, case.kind, case.rate, case.seed) not in done]
        missing = [r for r in REFERENCES if (r, case.kind, case.rate, case.seed) not in done]
        baselines = missing if want_baselines else []
        if not names and not baselines:
            continue
        noisy, noise = inject(clean, case)
        for method in names:
            row, p_clean = run_method(noisy, noise, case, method, setup)
            rows.append(row)
            if on_row is not None:
                on_row(row, p_clean, noise.is_clean)
        if baselines:
            for row in baseline_rows(clean, noisy, noise, case, setup, baselines):
                rows.append(row)
                if on_row is not None:
                    on_row(row, None, None)
    return rows


def run_key(row: dict[str, Any]) -> tuple[str, str, float, int]:
    return (str(row["method"]), str(row["kind"]), float(row["rate"]), int(row["seed"]))


@dataclass
class BenchReport:
    """What :func:`bench_corpus` did: every row of the results folder and the files it wrote."""

    output: Path
    rows: list[dict[str, Any]]
    new_rows: int
    skipped_methods: list[str]
    files: list[Path]


def method_params(items: dict[str, str]) -> dict[str, dict[str, str]]:
    """``{"ncr.epochs": "3"}`` -> ``{"ncr": {"epochs": "3"}}``.

    Raises
    ------
    ParameterError
        A name without ``METHOD.`` in front.
    """
    out: dict[str, dict[str, str]] = {}
    for name, value in items.items():
        method, sep, param = name.partition(".")
        if not sep or not method or not param:
            raise ParameterError(f"bench parameters are METHOD.NAME=VALUE, as ncr.epochs=3; got {name!r}")
        out.setdefault(method, {})[param] = value
    return out


def _settings(
    source: Any, evaluation: Any, setup: BenchSetup, encoder: str, fingerprint: str
) -> dict[str, Any]:
    """What a resumed benchmark must share with the one it adds to."""
    return {
        "corpus": str(Path(source).resolve()) if isinstance(source, (str, os.PathLike)) else str(source),
        "corpus_fingerprint": fingerprint,
        "evaluation": None if evaluation is None else str(Path(evaluation).resolve()),
        "encoder": encoder,
        "rematch": setup.rematch,
        "downstream": setup.downstream,
        "thresh": setup.thresh,
        "trusted_pairs": None if setup.trusted is None else len(setup.trusted),
        "params": setup.params,
    }


def resumable_settings(old: dict[str, Any], new: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The settings of a resumed benchmark: ``new`` must match ``old`` in everything that changes
    a run's numbers, and in the parameters of every method both run; methods may be added.

    Raises
    ------
    ParameterError
        The settings differ; the message names what differs.
    """
    differ = sorted(k for k in set(old) | set(new) if k != "params" and old.get(k) != new.get(k))
    old_params, new_params = old.get("params", {}), new.get("params", {})
    differ += [
        f"{m} parameters" for m in sorted(set(old_params) & set(new_params)) if old_params[m] != new_params[m]
    ]
    if differ:
        raise ParameterError(
            f"the results in {folder} were made with other settings ({', '.join(differ)}); "
            "resume with the same ones or choose another -o"
        )
    return {**new, "params": {**old_params, **new_params}}


def bench_corpus(
    source: str | os.PathLike,
    output: str | os.PathLike,
    *,
    methods: list[str] | None = None,
    noise: list[str] | None = None,
    seeds: list[int] | None = None,
    evaluation: str | os.PathLike | None = None,
    meta: str | os.PathLike | None = None,
    meta_rows: int | None = None,
    params: dict[str, dict[str, Any]] | None = None,
    rematch: bool = True,
    downstream_models: bool = True,
    thresh: float = 0.5,
    encoder: str = "offline",
    cache_dir: str | os.PathLike | None = None,
    device: str = "auto",
    progress: bool = True,
    resume: bool = False,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> BenchReport:
    """Benchmark methods on a clean corpus with injected noise; write the results folder.

    The folder gets ``results.csv`` (one row per run, written as runs finish), ``report.md``
    (tables ready for docs/benchmarks.md), ``auroc.png``, one ``p_clean-KIND-RATE.png`` per
    noise case, ``settings.json``, and ``pair_scores/`` (each run's posteriors, for the plots).

    Parameters
    ----------
    source
        A corpus taken as clean: the truth of every run is the noise injected into it.
    methods
        Registered method names, or ``["all"]`` (methods needing a trusted set are left out
        when ``meta`` is not given).
    noise
        Specs ``KIND:RATE[,RATE]`` (:func:`cleanpairs.noise.parse_noise_specs`).
    evaluation
        A clean corpus on which retrieval is measured (rSum of each method's heads, and of the
        downstream models); without it retrieval is skipped.
    meta, meta_rows
        A trusted table for ``mscn``, and how many of its first rows to use (all by default).
    resume
        Add to the results already in ``output``, skipping runs made before (their settings
        must be the same).
    on_row
        Called with each new row as soon as it is measured.
    """
    from cleanpairs.encoders import check_encoder_id, embed_corpus
    from cleanpairs.io.results import (
        prepare_results_folder,
        read_result_rows,
        read_settings,
        save_pair_scores,
        write_result_rows,
        write_settings,
    )
    from cleanpairs.io.tables import read_pairs

    cases = noise_cases(noise or ["shuffle:0.2"], seeds if seeds is not None else [0])
    if not 0.0 <= thresh <= 1.0:
        raise ParameterError(f"--thresh must be within [0, 1]; got {thresh}")
    if meta_rows is not None and meta_rows < 2:
        raise ParameterError(f"--meta-rows must be at least 2; got {meta_rows}")
    check_encoder_id(encoder)
    names, skipped = resolve_methods(methods or ["all"], have_trusted=meta is not None)
    params = params or {}
    unknown = sorted(set(params) - set(names))
    if unknown:
        raise ParameterError(f"parameters given for {unknown[0]!r}, which this benchmark does not run")
    checked = {m: get_method(m).check_params(params.get(m, {})) for m in names}
    folder = prepare_results_folder(output, resume=resume)

    def embed(path: str | os.PathLike) -> Any:
        return embed_corpus(read_pairs(path), encoder, cache_dir=cache_dir, device=device, progress=progress)

    embedded = embed(source)
    clean = embedded.pairs
    if len(np.unique(clean.image_index)) < 2:
        raise ParameterError("the benchmark needs a corpus with at least two images")
    setup = BenchSetup(
        names, checked, rematch=rematch, downstream=downstream_models, thresh=thresh, device=device
    )
    if evaluation is not None:
        setup.evaluation = embed(evaluation).pairs
    if meta is not None and any(get_method(m).needs_trusted for m in names):
        trusted = embed(meta).pairs
        rows = slice(0, meta_rows)
        setup.trusted = PairEmbeddings(
            trusted.images,
            trusted.texts[rows],
            trusted.image_index[rows],
            trusted.keys[rows],
            trusted.aligned,
        )
    settings = _settings(source, evaluation, setup, encoder, embedded.fingerprint)
    previous = read_result_rows(folder) if resume else []
    if previous:
        settings = resumable_settings(read_settings(folder) or {}, settings, folder)
    write_settings(folder, settings)
    rows = list(previous)

    def keep(row: dict[str, Any], p_clean: np.ndarray | None, is_clean: np.ndarray | None) -> None:
        rows.append(row)
        write_result_rows(folder, rows, COLUMNS)
        if p_clean is not None and is_clean is not None:
            case = NoiseCase(row["kind"], row["rate"], row["seed"])
            save_pair_scores(folder, case.run_name(row["method"]), p_clean, is_clean)
        if on_row is not None:
            on_row(row)

    fresh = run_benchmark(clean, cases, setup, done={run_key(r) for r in previous}, on_row=keep)
    if not rows:
        raise ParameterError("the benchmark made no runs")

    files = write_bench_report(folder, rows, settings)
    return BenchReport(folder, rows, len(fresh), skipped, files)


def describe_bench(rows: list[dict[str, Any]], settings: dict[str, Any]) -> str:
    """The paragraph above a benchmark's tables: corpus, encoder, what each column means."""
    corpus = Path(str(settings.get("corpus", "corpus"))).name
    evaluation = settings.get("evaluation")
    pairs = max((int(r["pairs"]) for r in rows if r.get("pairs") is not None), default=0)
    text = (
        f"`cleanpairs bench` on {corpus} ({pairs:,} pairs, taken as clean), "
        f"encoder `{settings.get('encoder')}`"
        + (f"; retrieval measured on {Path(str(evaluation)).name}" if evaluation else "")
        + f". Each cell: mean over seeds {sorted({int(r['seed']) for r in rows})}"
        + " (± std where more than one). AUROC / AP: the injected mismatches as positives, ranked by "
        "`1 - cp_p_clean`. Wall: fit plus rematch, seconds, embeddings cached."
    )
    if evaluation and settings.get("downstream"):
        text += (
            f" Downstream: linear InfoNCE heads (`cleanpairs train`) on the pairs with cp_p_clean >= "
            f"{settings.get('thresh')}"
            + (f" plus rematched pairs scoring >= {EXPORT_REMATCH_THRESH}" if settings.get("rematch") else "")
            + "; rSum = R@1+5+10 both directions."
        )
    return text


def write_bench_report(folder: Path, rows: list[dict[str, Any]], settings: dict[str, Any]) -> list[Path]:
    """Write ``report.md``, ``auroc.png`` and the ``p_clean`` histograms of a results folder."""
    from cleanpairs.bench_report import auroc_figure, histogram_figure, render_report
    from cleanpairs.io.results import RESULTS_CSV, SETTINGS, load_pair_scores, save_figure, write_text

    report = render_report(
        rows,
        heading=f"Benchmark: {Path(str(settings.get('corpus', 'corpus'))).name}",
        description=describe_bench(rows, settings),
        export_thresh=EXPORT_REMATCH_THRESH,
    )
    files = [folder / RESULTS_CSV, folder / SETTINGS, write_text(folder / "report.md", report)]
    files.append(save_figure(auroc_figure(rows), folder / "auroc.png"))
    first_seed = min(int(r["seed"]) for r in rows)
    for kind, rate in dict.fromkeys((str(r["kind"]), float(r["rate"])) for r in rows):
        case = NoiseCase(kind, rate, first_seed)
        samples = []
        for method in dict.fromkeys(str(r["method"]) for r in rows):
            loaded = load_pair_scores(folder, case.run_name(method))
            if loaded is not None:
                samples.append((method, *loaded))
        if samples:
            figure = histogram_figure(samples, f"cp_p_clean, {case.label} noise, seed {first_seed}")
            files.append(save_figure(figure, folder / f"p_clean-{kind}-{rate:g}.png"))
    return files


def rewrite_bench_report(output: str | os.PathLike) -> BenchReport:
    """Render a results folder's tables and plots again from its ``results.csv``, running nothing
    (after a benchmark was stopped, or to refresh the report).

    Raises
    ------
    InputError
        The folder holds no benchmark results.
    """
    from cleanpairs.io.results import read_result_rows, read_settings

    folder = Path(output)
    rows = read_result_rows(folder)
    settings = read_settings(folder)
    if not rows or settings is None:
        raise InputError(f"{folder} holds no benchmark results (results.csv and settings.json)")
    return BenchReport(folder, rows, 0, [], write_bench_report(folder, rows, settings))
