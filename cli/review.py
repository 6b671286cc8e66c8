"""``cleanpairs review``: a static page of the flagged, borderline and kept pairs to look at."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cleanpairs.cli.app import MaxImagePixelsOption, app, reports_errors


@app.command()
@reports_errors
def review(
    scores: Annotated[
        Path,
        typer.Argument(help="A scores file, or a folder of score shards (every *.parquet, in name order)."),
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder of the review site.")],
    truth: Annotated[
        str | None, typer.Option(help="Boolean column, true for clean pairs: stack the histogram, AUROC, F1.")
    ] = None,
    thresh: Annotated[float, typer.Option(help="The filter threshold the page reviews.")] = 0.5,
    worst: Annotated[int, typer.Option(help="Pairs most likely mismatched to show.")] = 200,
    borderline: Annotated[int, typer.Option(help="Pairs nearest the threshold to show.")] = 100,
    sample: Annotated[int, typer.Option(help="Random kept pairs to show.")] = 100,
    seed: Annotated[int, typer.Option(help="Seed of the random sample.")] = 0,
    max_image_pixels: MaxImagePixelsOption = None,
) -> None:
    """Write a static page (opens from disk) showing the pairs to check, with keep/drop marks."""
    from cleanpairs.review import build_review

    result = build_review(
        scores,
        output,
        truth=truth,
        thresh=thresh,
        worst=worst,
        borderline=borderline,
        sample=sample,
        seed=seed,
        max_image_pixels=max_image_pixels,
    )
    if result.unreadable:
        typer.echo(f"{result.unreadable} images could not be read; the page shows their status", err=True)
    typer.echo(result.index.resolve())
