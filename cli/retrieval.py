"""``cleanpairs train``, ``eval`` and ``search``: the retrieval model trained on the kept pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cleanpairs.cli.app import (
    CacheDirOption,
    DeviceOption,
    ImageColOption,
    KeyColOption,
    MaxImagePixelsOption,
    ProgressOption,
    TextColOption,
    app,
    reports_errors,
)


@app.command()
@reports_errors
def train(
    scores: Annotated[Path, typer.Argument(help="A scores file written by `cleanpairs score`.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Model folder to write.")],
    thresh: Annotated[float, typer.Option(help="Train on rows with cp_p_clean >= THRESH.")] = 0.5,
    rematch: Annotated[
        bool, typer.Option(help="Also train on rejected images with their rematched caption.")
    ] = False,
    rematch_thresh: Annotated[
        float, typer.Option(help="Use a rematched pair only where cp_rematch_score >= this.")
    ] = 0.15,
    epochs: Annotated[int | None, typer.Option(help="Training epochs [default: by corpus size].")] = None,
    seed: Annotated[int, typer.Option(help="Random seed: same input and seed give the same model.")] = 0,
    device: DeviceOption = "auto",
    cache_dir: CacheDirOption = None,
    progress: ProgressOption = True,
    max_image_pixels: MaxImagePixelsOption = None,
) -> None:
    """Train a retrieval model (heads on the frozen encoder) on the kept pairs of a scores file."""
    from cleanpairs.retrieval import train_from_scores

    model = train_from_scores(
        scores,
        output,
        thresh=thresh,
        rematch=rematch,
        rematch_thresh=rematch_thresh,
        epochs=epochs,
        seed=seed,
        device=device,
        cache_dir=cache_dir,
        progress=progress,
        max_image_pixels=max_image_pixels,
    )
    info = model.info
    rematched = f" + {info['rows_rematched']} rematched" if rematch else ""
    typer.echo(
        f"trained on {info['rows']} pairs ({info['rows_kept']} with cp_p_clean >= {thresh}{rematched}) "
        f"of {info['images']} images for {info['epochs']} epochs in {info['train_s']:.1f} s -> {output}"
    )
    typer.echo(f"encoder {model.encoder}; heads {info['dim']}-d, hidden {info['hidden']}")


@app.command("eval")
@reports_errors
def eval_(
    model: Annotated[Path, typer.Argument(help="A model folder written by `cleanpairs train`.")],
    corpus: Annotated[str, typer.Argument(help="A clean corpus (parquet/csv/jsonl file, folder or glob).")],
    key_col: KeyColOption = None,
    image_col: ImageColOption = None,
    text_col: TextColOption = None,
    device: DeviceOption = "auto",
    cache_dir: CacheDirOption = None,
    progress: ProgressOption = True,
    max_image_pixels: MaxImagePixelsOption = None,
) -> None:
    """Report recall@1/5/10 both ways and rSum of a model on a clean corpus."""
    from cleanpairs.retrieval import evaluate_corpus

    result = evaluate_corpus(
        model,
        corpus,
        key_col=key_col,
        image_col=image_col,
        text_col=text_col,
        cache_dir=cache_dir,
        device=device,
        progress=progress,
        max_image_pixels=max_image_pixels,
    )
    m = result.metrics
    typer.echo(f"{result.pairs} captions of {result.images} images")
    if result.not_scored:
        typer.echo(f"  {result.not_scored} rows left out (unreadable image or empty caption)")
    typer.echo(f"{'':<12}{'R@1':>7}{'R@5':>7}{'R@10':>7}")
    for label, side in (("image->text", "i2t"), ("text->image", "t2i")):
        typer.echo(f"{label:<12}" + "".join(f"{m[f'{side}_r{k}']:>7.1f}" for k in (1, 5, 10)))
    typer.echo(f"rSum {m['rsum']:.1f}")


@app.command()
@reports_errors
def search(
    model: Annotated[Path, typer.Argument(help="A model folder written by `cleanpairs train`.")],
    text: Annotated[str | None, typer.Option(help="Find the images nearest to this caption.")] = None,
    image: Annotated[Path | None, typer.Option(help="Find the captions nearest to this image.")] = None,
    corpus: Annotated[
        str | None, typer.Option(help="Corpus to search [default: the one the model was trained on].")
    ] = None,
    k: Annotated[int, typer.Option("-k", "--k", help="How many results.")] = 5,
    key_col: KeyColOption = None,
    image_col: ImageColOption = None,
    text_col: TextColOption = None,
    device: DeviceOption = "auto",
    cache_dir: CacheDirOption = None,
    progress: ProgressOption = True,
    max_image_pixels: MaxImagePixelsOption = None,
) -> None:
    """Nearest images of a corpus for --text, or nearest captions for --image.

    The corpus's index is built on the first search and kept in the model folder.
    """
    from cleanpairs.retrieval import search as search_corpus

    result = search_corpus(
        model,
        corpus,
        text=text,
        image=image,
        k=k,
        key_col=key_col,
        image_col=image_col,
        text_col=text_col,
        cache_dir=cache_dir,
        device=device,
        progress=progress,
        max_image_pixels=max_image_pixels,
    )
    if result.unsaved_reason is not None:
        typer.echo(f"note: {result.unsaved_reason}; searched with an index built in memory", err=True)
    what = "images" if text is not None else "captions"
    built = "index built and saved" if result.built_index else "saved index"
    if result.unsaved_reason is not None:
        built = "index built in memory, not saved"
    typer.echo(f"{len(result.hits)} nearest of {result.items} {what} in {result.corpus} ({built})")
    for hit in result.hits:
        shown = hit.image if text is not None else hit.caption
        typer.echo(f"{hit.rank:>3}  {hit.score:.3f}  {hit.key}  {shown}")
