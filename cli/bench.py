"""``cleanpairs bench``: every method on a corpus with injected noise -> CSV, tables, plots."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer

from cleanpairs.cli.app import CacheDirOption, DeviceOption, ProgressOption, app, parse_params, reports_errors
from cleanpairs.errors import ParameterError


def _int_list(text: str, option: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ParameterError(f"{option} takes integers separated by commas, as 0,1; got {text!r}") from None


def _describe(row: dict[str, Any]) -> str:
    head = f"{row['kind']} {row['rate']:.0%} seed {row['seed']}  {row['method']:<10}"
    parts = []
    if row.get("auroc") is not None:
        parts.append(f"AUROC {row['auroc']:.4f}  AP {row['ap']:.4f}  F1 {row['f1']:.3f}")
        parts.append(f"noise est. {row['estimated_noise_rate']:.1%} (true {row['true_noise_rate']:.1%})")
    accuracy = row.get("rematch_accuracy")
    if accuracy is not None and not math.isnan(accuracy):
        parts.append(f"rematch {accuracy:.1%} right")
    if row.get("heads_rsum") is not None:
        parts.append(f"heads rSum {row['heads_rsum']:.1f}")
    if row.get("downstream_rsum") is not None:
        if math.isnan(row["downstream_rsum"]):
            parts.append("downstream: too few pairs kept to train on")
        else:
            parts.append(f"downstream rSum {row['downstream_rsum']:.1f} on {row['downstream_rows']} pairs")
    if row.get("wall_s") is not None:
        parts.append(f"{row['wall_s']:.1f} s")
    return head + "  " + "  ".join(parts)


@app.command()
@reports_errors
def bench(
    corpus: Annotated[
        str,
        typer.Argument(help="A clean corpus (parquet/csv/jsonl, folder or glob): noise is injected into it."),
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="Results folder (CSV, tables, PNG plots).")],
    methods: Annotated[str, typer.Option(help="Comma-separated methods, or all.")] = "all",
    noise: Annotated[
        list[str] | None,
        typer.Option(
            help="KIND:RATE[,RATE...] (repeatable); kinds shuffle, partial, complete (= image), hard "
            "[default: shuffle:0.2,0.4,0.6,0.8]."
        ),
    ] = None,
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds of noise and training.")] = "0",
    eval_corpus: Annotated[
        Path | None,
        typer.Option("--eval", help="Clean corpus to measure retrieval on (heads rSum, downstream models)."),
    ] = None,
    meta: Annotated[
        Path | None, typer.Option(help="Trusted clean pairs for the methods that need them (mscn).")
    ] = None,
    meta_rows: Annotated[int | None, typer.Option(help="Use only the first N rows of --meta.")] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", help="METHOD.NAME=VALUE hyperparameter (repeatable).")
    ] = None,
    rematch: Annotated[
        bool, typer.Option(help="Rematch the flagged pairs and measure the rematches.")
    ] = True,
    downstream: Annotated[
        bool,
        typer.Option(help="Train and evaluate a retrieval model on each filtered corpus (needs --eval)."),
    ] = True,
    thresh: Annotated[
        float, typer.Option(help="Filter threshold on cp_p_clean for downstream training.")
    ] = 0.5,
    encoder: Annotated[
        str,
        typer.Option(help="offline, offline-large, openclip:ARCH/TAG, openclip:ARCH:PATH or precomputed."),
    ] = ("offline"),
    cache_dir: CacheDirOption = None,
    device: DeviceOption = "auto",
    resume: Annotated[
        bool, typer.Option(help="Add to the results in OUTPUT, skipping runs already made.")
    ] = False,
    progress: ProgressOption = True,
    report_only: Annotated[
        bool, typer.Option(help="Only render OUTPUT's tables and plots again from its results.csv.")
    ] = False,
) -> None:
    """Benchmark the methods on a clean corpus with injected noise: detection, retrieval, rematching."""
    from cleanpairs.bench import bench_corpus, method_params, rewrite_bench_report

    if report_only:
        report = rewrite_bench_report(output)
        typer.echo(f"rendered {len(report.rows)} runs of {output}")
        for path in report.files:
            typer.echo(f"  {path}")
        return
    report = bench_corpus(
        corpus,
        output,
        methods=[m.strip() for m in methods.split(",") if m.strip()],
        noise=noise or ["shuffle:0.2,0.4,0.6,0.8"],
        seeds=_int_list(seeds, "--seeds"),
        evaluation=eval_corpus,
        meta=meta,
        meta_rows=meta_rows,
        params=method_params(parse_params(param or [])),
        rematch=rematch,
        downstream_models=downstream,
        thresh=thresh,
        encoder=encoder,
        cache_dir=cache_dir,
        device=device,
        progress=progress,
        resume=resume,
        on_row=lambda row: typer.echo(_describe(row)),
    )
    if report.skipped_methods:
        typer.echo(f"left out (need a trusted set, pass --meta): {', '.join(report.skipped_methods)}")
    resumed = len(report.rows) - report.new_rows
    typer.echo(
        f"{report.new_rows} runs measured"
        + (f", {resumed} kept from before" if resumed else "")
        + f" -> {output}"
    )
    for path in report.files:
        typer.echo(f"  {path}")
