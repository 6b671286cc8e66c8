"""The ``cleanpairs`` command: parses options, calls the library, prints, sets exit codes."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType
from typing import Annotated

import typer

from cleanpairs.cli.app import (
    CacheDirOption,
    DeviceOption,
    EngineOption,
    FitPairsOption,
    ImageColOption,
    KeyColOption,
    MaxImagePixelsOption,
    ProgressOption,
    RayAddressOption,
    RematchBelowOption,
    RematchKOption,
    RematchMassOption,
    RematchOption,
    SkipBadShardsOption,
    TextColOption,
    app,
    parse_params,
    percent,
    reports_errors,
)
from cleanpairs.sharded import DEFAULT_FIT_PAIRS, ShardedRun


@app.command()
@reports_errors
def score(
    source: Annotated[
        str,
        typer.Argument(
            help="Corpus: parquet/csv/jsonl file, webdataset .tar shard, folder of shards, glob, "
            "brace range ('shards/{00000..00099}.tar') or clip-retrieval folder."
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            help="A .parquet scores file, or a folder of scores shards (one per input shard) "
            "[default: <name>.scores.parquet beside a file, <name>.scores/ beside a folder].",
        ),
    ] = None,
    method: Annotated[
        str | None,
        typer.Option(help="Scoring method (see `cleanpairs methods`) [default: the benchmark's best]."),
    ] = None,
    encoder: Annotated[
        str,
        typer.Option(help="offline, offline-large, openclip:ARCH/TAG, openclip:ARCH:PATH or precomputed."),
    ] = "offline",
    param: Annotated[
        list[str] | None, typer.Option("--param", help="Method hyperparameter NAME=VALUE (repeatable).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed: same input and seed give the same output.")] = 0,
    device: DeviceOption = "auto",
    key_col: KeyColOption = None,
    image_col: ImageColOption = None,
    text_col: TextColOption = None,
    cache_dir: CacheDirOption = None,
    progress: ProgressOption = True,
    max_image_pixels: MaxImagePixelsOption = None,
    image_emb_col: Annotated[
        str | None, typer.Option(help="Column of image embeddings for --encoder precomputed.")
    ] = None,
    text_emb_col: Annotated[
        str | None, typer.Option(help="Column of caption embeddings for --encoder precomputed.")
    ] = None,
    rematch: RematchOption = False,
    rematch_k: RematchKOption = 10,
    rematch_mass: RematchMassOption = 0.5,
    rematch_below: RematchBelowOption = 0.5,
    meta: Annotated[
        Path | None,
        typer.Option(help="Trusted clean pairs (same columns as the corpus) for methods that need them."),
    ] = None,
    meta_keys: Annotated[
        Path | None,
        typer.Option(help="Text file of corpus keys, one per line, that are trusted clean pairs."),
    ] = None,
    fit_pairs: FitPairsOption = DEFAULT_FIT_PAIRS,
    save_scorer: Annotated[
        Path | None, typer.Option(help="Also save the fitted scorer here, for `cleanpairs apply`.")
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(help="Carry on an interrupted run into a folder (the same command again does too)."),
    ] = False,
    engine: EngineOption = "local",
    ray_address: RayAddressOption = None,
    skip_bad_shards: SkipBadShardsOption = False,
    similarity_col: Annotated[
        str | None,
        typer.Option(
            help="A column already holding each pair's image-text score (LAION's similarity): "
            "--method similarity splits it, with no encoder."
        ),
    ] = None,
) -> None:
    """Score every pair's correspondence and write the corpus with cp_* columns.

    Into a .parquet file, the whole corpus is scored in memory. Into a folder, the method is fit on
    a sample of the corpus (--fit-pairs) and every shard is scored with the fitted scorer into a
    scores shard of its own, with a completion marker: a rerun skips finished shards.
    """
    from cleanpairs.methods import DEFAULT_METHOD

    # What both ways of scoring take, said once.
    common = {
        "method": method or DEFAULT_METHOD,
        "encoder": encoder,
        "params": parse_params(param or []),
        "seed": seed,
        "device": device,
        "key_col": key_col,
        "image_col": image_col,
        "text_col": text_col,
        "image_emb_col": image_emb_col,
        "text_emb_col": text_emb_col,
        "cache_dir": cache_dir,
        "progress": progress,
        "max_image_pixels": max_image_pixels,
        "save_scorer_to": save_scorer,
    }
    if _writes_shards(source, output):
        if meta is not None or meta_keys is not None or similarity_col is not None:
            from cleanpairs.errors import InputError

            raise InputError(
                "--meta, --meta-keys and --similarity-col score one file in memory: "
                "give -o NAME.parquet "
                "(or fit on a file with --save-scorer DIR, then `cleanpairs apply DIR SHARDS/`)"
            )
        from cleanpairs.sharded import score_shards

        folder = output if output is not None else _default_folder(source)
        sharded = score_shards(
            source,
            folder,
            **common,
            fit_pairs=fit_pairs,
            engine=engine,
            ray_address=ray_address,
            skip_bad_shards=skip_bad_shards,
            rematch=rematch,
            rematch_settings={"k": rematch_k, "mass": rematch_mass, "threshold": rematch_below},
        )
        _report_shards(sharded)
        return
    if resume:
        from cleanpairs.errors import InputError

        raise InputError(
            "--resume carries on a run into a folder of shards; a .parquet output is whole or absent"
        )
    from cleanpairs.pipeline import score_corpus

    run = score_corpus(
        source,
        output,
        **common,
        rematch=rematch,
        rematch_settings={"k": rematch_k, "mass": rematch_mass, "threshold": rematch_below},
        meta_source=meta,
        meta_keys=meta_keys,
        similarity_col=similarity_col,
    )
    meta = run.meta
    typer.echo("columns: " + ", ".join(f"{role}={col}" for role, col in meta.roles.items() if col))
    for warning in meta.extra.get("warnings", []):
        typer.echo(f"warning: {warning}", err=True)
    problems = {k: v for k, v in run.status_counts.items() if k != "ok"}
    typer.echo(
        f"scored {meta.scored_rows} of {meta.rows} rows with {meta.method} on {meta.encoder} -> {run.output}"
    )
    for reason, count in sorted(problems.items(), key=lambda kv: -kv[1]):
        typer.echo(f"  not scored: {count} x {reason}")
    if "rematch" in meta.extra:
        found = meta.extra["rematch"]
        typer.echo(
            f"rematched {found['rematched']} of {found['candidates']} pairs below {found['threshold']}"
        )
    typer.echo(
        f"estimated noise rate {percent(meta.estimated_noise_rate)}; encoded "
        f"{run.encoded.get('images', 0)} images and {run.encoded.get('texts', 0)} captions "
        f"(the rest from the cache); {meta.timings['total_s']:.1f} s"
    )


def _writes_shards(source: str, output: Path | None) -> bool:
    """A folder output (an existing folder, or a name without a suffix), or a folder or glob of
    shards without -o, is sharded; a clip-retrieval folder is one corpus."""
    if output is not None:
        return output.is_dir() or output.suffix == ""
    from cleanpairs.io.embeddings import is_clip_retrieval_folder

    folder = Path(source)
    if folder.is_dir():
        return not is_clip_retrieval_folder(folder)
    return any(ch in source for ch in "*?[")


def _default_folder(source: str) -> Path:
    from cleanpairs.errors import InputError

    if any(ch in source for ch in "*?["):
        raise InputError("a glob input needs an explicit output folder (-o scored/)")
    path = Path(source.rstrip("/"))
    return path.parent / f"{path.name}.scores"


def _alignment_note(alignment: dict | None) -> str:
    if alignment is None:
        return ""
    if alignment["aligned"]:
        return f" in the corpus alignment of all {alignment['on_pairs']} pairs"
    return (
        f" unaligned: the noise looks shared by whole images (image share {alignment['image_share']:.2f}; "
        "--param align=cca aligns anyway)"
    )


def _report_shards(run: ShardedRun) -> None:
    verb = "fitted on" if run.fitted else "reused the scorer fitted on"
    fit = f"{verb} {run.fit_pairs} pairs{_alignment_note(run.alignment)}; " if run.fit_pairs else ""
    typer.echo(
        f"scored {run.scored_rows} of {run.rows} rows in {run.shards} shards with {run.method} "
        f"-> {run.output} "
        f"({fit}{run.scored_shards} shards scored now, {run.skipped_shards} already done)"
    )
    for reason, count in sorted(run.status_counts.items(), key=lambda kv: -kv[1]):
        if reason != "ok":
            typer.echo(f"  not scored: {count} x {reason}")
    for warning in run.warnings:
        typer.echo(f"warning: {warning}", err=True)
    for failed in run.failed_shards:
        typer.echo(f"  failed shard: {failed['source']}: {failed['error']}", err=True)
    if run.rematch is not None:
        found = run.rematch
        typer.echo(
            f"rematched {found['rematched']} of {found['candidates']} pairs below {found['threshold']} "
            "across shards"
        )
    typer.echo(f"{run.timings['total_s']:.1f} s")


@app.command()
@reports_errors
def apply(
    scorer: Annotated[Path, typer.Argument(help="A scorer folder saved by `score --save-scorer` or a run.")],
    source: Annotated[str, typer.Argument(help="Corpus: a file, a folder of shards, or a glob.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder of scores shards to write.")],
    device: DeviceOption = "auto",
    key_col: KeyColOption = None,
    image_col: ImageColOption = None,
    text_col: TextColOption = None,
    cache_dir: CacheDirOption = None,
    progress: ProgressOption = True,
    max_image_pixels: MaxImagePixelsOption = None,
    engine: EngineOption = "local",
    ray_address: RayAddressOption = None,
    skip_bad_shards: SkipBadShardsOption = False,
    rematch: RematchOption = False,
    rematch_k: RematchKOption = 10,
    rematch_mass: RematchMassOption = 0.5,
    rematch_below: RematchBelowOption = 0.5,
) -> None:
    """Score new pairs with a fitted scorer, shard by shard, without fitting again."""
    from cleanpairs.sharded import score_shards

    run = score_shards(
        source,
        output,
        scorer=scorer,
        device=device,
        key_col=key_col,
        image_col=image_col,
        text_col=text_col,
        cache_dir=cache_dir,
        progress=progress,
        engine=engine,
        ray_address=ray_address,
        skip_bad_shards=skip_bad_shards,
        max_image_pixels=max_image_pixels,
        rematch=rematch,
        rematch_settings={"k": rematch_k, "mass": rematch_mass, "threshold": rematch_below},
    )
    _report_shards(run)


@app.command("filter")
@reports_errors
def filter_(
    scores: Annotated[Path, typer.Argument(help="A scores file written by `cleanpairs score`.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where the kept rows go.")],
    thresh: Annotated[float, typer.Option(help="Keep rows with cp_p_clean >= THRESH.")] = 0.5,
    rejected: Annotated[Path | None, typer.Option(help="Also write the other rows here.")] = None,
    keep_keys: Annotated[
        Path | None, typer.Option(help="Keys file (one per line, as `review` downloads): keep these rows.")
    ] = None,
    drop_keys: Annotated[
        Path | None, typer.Option(help="Keys file (one per line, as `review` downloads): drop these rows.")
    ] = None,
) -> None:
    """Keep the rows whose clean posterior reaches the threshold."""
    from cleanpairs.io.scores import filter_scores

    counts = filter_scores(
        scores, output, thresh=thresh, rejected=rejected, keep_keys=keep_keys, drop_keys=drop_keys
    )
    total = counts.kept + counts.rejected
    typer.echo(f"kept {counts.kept} of {total} rows (cp_p_clean >= {thresh}) -> {output}")
    if rejected is not None:
        typer.echo(f"rejected {counts.rejected} rows -> {rejected}")


@app.command()
@reports_errors
def export(
    scores: Annotated[Path, typer.Argument(help="A scores file written by `cleanpairs score`.")],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Output folder of shards (a .npy or .txt file for uids).")
    ],
    format: Annotated[
        str,
        typer.Option(
            "--format", help="parquet, webdataset, or uids (a keep-list: DataComp's .npy, or .txt of keys)."
        ),
    ] = "parquet",
    thresh: Annotated[float, typer.Option(help="Export rows with cp_p_clean >= THRESH.")] = 0.5,
    shard_rows: Annotated[int, typer.Option(help="Pairs per shard.")] = 10_000,
    rematch: Annotated[
        bool, typer.Option(help="Also write rejected images with their rematched caption (cp_rematched).")
    ] = False,
    rematch_thresh: Annotated[
        float, typer.Option(help="Write a rematched pair only where cp_rematch_score >= this.")
    ] = 0.15,
    max_image_pixels: MaxImagePixelsOption = None,
) -> None:
    """Write the kept pairs (and, with --rematch, the corrected ones) as parquet or webdataset shards."""
    from cleanpairs.io.export import export_scores

    counts = export_scores(
        scores,
        output,
        format=format,
        thresh=thresh,
        shard_rows=shard_rows,
        rematch=rematch,
        rematch_thresh=rematch_thresh,
        max_image_pixels=max_image_pixels,
    )
    if format == "uids":
        typer.echo(f"wrote the keys of {counts.rows} kept pairs -> {output}")
        return
    typer.echo(f"exported {counts.rows} pairs in {counts.shards} {format} shards -> {output}")
    if rematch:
        typer.echo(f"  {counts.rematched} of them rematched (cp_rematch_score >= {rematch_thresh})")
    if counts.failed:
        typer.echo(f"  {counts.failed} kept rows had unreadable images and were left out", err=True)


@app.command()
@reports_errors
def methods(
    details: Annotated[str | None, typer.Option(help="Show one method's parameters.")] = None,
) -> None:
    """List the registered scoring methods."""
    # Specs, not classes: listing the methods imports no trainer (and no torch).
    from cleanpairs.methods import DEFAULT_METHOD, available_methods, get_spec

    if details is None:
        for name in available_methods():
            mark = " (default)" if name == DEFAULT_METHOD else ""
            typer.echo(f"{name:<12} {get_spec(name).summary}{mark}")
        return
    spec = get_spec(details)
    typer.echo(f"{spec.name}: {spec.summary}")
    for pname, param in spec.params.items():
        typer.echo(f"  {pname:<14} {param.describe():<40} default {param.default!r}  {param.doc}")


@app.command()
@reports_errors
def info(
    scores: Annotated[Path, typer.Argument(help="A scores file written by `cleanpairs score`.")],
    truth: Annotated[
        str | None, typer.Option(help="Boolean column, true for clean pairs: report detection metrics.")
    ] = None,
    bins: Annotated[int, typer.Option(min=1, max=100, help="Histogram bins.")] = 10,
) -> None:
    """Summarise a scores file: rows, method, encoder, noise rate, cp_p_clean histogram."""
    from cleanpairs.pipeline import summarize_scores

    summary = summarize_scores(scores, bins=bins, truth_col=truth)
    meta = summary.meta
    typer.echo(f"file       {scores}")
    typer.echo(f"rows       {summary.rows} ({meta.scored_rows} scored)")
    typer.echo(f"method     {meta.method}  {meta.params}")
    typer.echo(f"encoder    {meta.encoder}")
    typer.echo(f"seed       {meta.seed}   cleanpairs {meta.version}")
    typer.echo(f"noise rate {percent(meta.estimated_noise_rate)} (estimated)")
    for status, count in sorted(summary.status_counts.items(), key=lambda kv: -kv[1]):
        typer.echo(f"status     {count:>8}  {status}")
    typer.echo("cp_p_clean")
    peak = max(summary.histogram) or 1
    for lo, hi, count in zip(summary.bin_edges[:-1], summary.bin_edges[1:], summary.histogram, strict=True):
        bar = "#" * round(40 * count / peak)
        typer.echo(f"  [{lo:.2f}, {hi:.2f}{']' if hi >= 1 else ')'} {count:>8}  {bar}")
    if summary.detection is not None:
        d = summary.detection
        typer.echo(
            f"against {truth}: AUROC {d['auroc']:.3f}  AP {d['ap']:.3f}  "
            f"precision {d['precision']:.3f}  recall {d['recall']:.3f}  F1 {d['f1']:.3f} "
            f"(flagging cp_p_clean < 0.5)"
        )
        typer.echo(
            f"noise rate: true {percent(d['true_noise_rate'])}, estimated "
            f"{percent(d['estimated_noise_rate'])}, flagged {percent(d['flagged_rate'])}"
        )


@app.command("demo-corpus")
@reports_errors
def demo_corpus(
    output: Annotated[Path, typer.Argument(help="Folder to write pairs.parquet and images/ into.")],
    images: Annotated[int, typer.Option(min=2, help="Pictures to draw.")] = 200,
    captions: Annotated[int, typer.Option(min=1, help="Captions per picture.")] = 2,
    noise: Annotated[float, typer.Option(min=0.0, max=1.0, help="Fraction of captions to shuffle.")] = 0.3,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Draw a synthetic corpus of shapes with captions, a known fraction of them shuffled.

    The column is_clean holds the truth (use `cleanpairs info --truth is_clean`).
    """
    import pyarrow as pa

    from cleanpairs.demo import make_demo_corpus
    from cleanpairs.io.tables import write_image_corpus

    demo = make_demo_corpus(images, captions, noise, seed)
    n = len(demo.captions)
    table = pa.table(
        {
            "key": [f"{iid}#{i % captions}" for i, iid in enumerate(demo.image_ids)],
            "caption": demo.captions,
            "image_id": demo.image_ids,
            "is_clean": demo.is_clean,
        }
    )
    path = write_image_corpus(output, demo.images, table)
    typer.echo(
        f"wrote {n} pairs of {images} pictures, {percent(1 - demo.is_clean.mean())} mismatched -> {path}"
    )


# Commands defined in their own modules register on import; after these, so `--help` lists score first.
from cleanpairs.cli import bench as _bench  # noqa: E402, F401  (registers bench)
from cleanpairs.cli import retrieval as _retrieval  # noqa: E402, F401  (registers train, eval, search)
from cleanpairs.cli import review as _review  # noqa: E402, F401  (registers review)


def _click_exceptions() -> ModuleType:
    """The exceptions of the click that runs the app: typer 0.2x ships its own copy of click,
    whose classes are not the installed click's."""
    try:
        from typer._click import exceptions
    except ImportError:
        from click import exceptions
    return exceptions


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: runs the app and returns its exit code.

    Click answers a usage mistake (an unknown option, a value of the wrong type) with a usage
    block of several lines; here it is one ``error:`` line like every other refusal, exit 2.
    """
    click = _click_exceptions()
    # typer 0.2x raises its own Abort on Ctrl-C; older ones raise click's.
    aborts = (typer.Abort, getattr(click, "Abort", typer.Abort))
    try:
        code = app(args=argv, prog_name="cleanpairs", standalone_mode=False)
    except click.NoArgsIsHelpError as err:
        err.show()  # the help text, as for --help
        return 0
    except click.UsageError as err:
        command = err.ctx.command_path if err.ctx is not None else "cleanpairs"
        typer.echo(f"error: {err.format_message()} (see '{command} --help')", err=True)
        return 2
    except click.ClickException as err:
        typer.echo(f"error: {err.format_message()}", err=True)
        return err.exit_code
    except aborts:
        typer.echo("interrupted; nothing was written", err=True)
        return 130
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
