"""The Typer application and what every command shares: one-line errors with exit code 2,
``--param`` parsing. Commands live in :mod:`cleanpairs.cli.main` and the modules it imports."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

import cleanpairs
from cleanpairs.errors import CleanpairsError, InputError

# Options several commands take, declared once so their flags and help read the same everywhere.
DeviceOption = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
CacheDirOption = Annotated[Path | None, typer.Option(help="Embedding cache [default: ~/.cache/cleanpairs].")]
ProgressOption = Annotated[bool, typer.Option(help="Show progress bars (only on a terminal).")]
KeyColOption = Annotated[str | None, typer.Option(help="Column of unique pair keys.")]
ImageColOption = Annotated[str | None, typer.Option(help="Column of image paths or bytes.")]
TextColOption = Annotated[str | None, typer.Option(help="Column of captions.")]
FitPairsOption = Annotated[
    int, typer.Option(help="Pairs the method is fit on when scoring a folder (a sample of the corpus).")
]
EngineOption = Annotated[str, typer.Option(help="local (this process) or ray (needs cleanpairs[ray]).")]
RayAddressOption = Annotated[
    str | None, typer.Option(help="An existing Ray cluster for --engine ray [default: start a local one].")
]
SkipBadShardsOption = Annotated[
    bool, typer.Option(help="Record a shard that cannot be read in the run file and go on with the rest.")
]
RematchOption = Annotated[
    bool, typer.Option(help="Propose a new caption for the image of every pair below the threshold.")
]
RematchKOption = Annotated[int, typer.Option(help="Candidate captions per image (faiss neighbours).")]
RematchMassOption = Annotated[
    float, typer.Option(help="Share of the mismatched images' mass the partial transport moves.")
]
RematchBelowOption = Annotated[
    float, typer.Option(help="Pairs with cp_p_clean below this take part in rematching.")
]
MaxImagePixelsOption = Annotated[
    int | None,
    typer.Option(
        help="Images with more pixels are not decoded (the row's cp_status says so) "
        "[default: 89478485, Pillow's decompression-bomb limit, also the most allowed].",
        show_default=False,
    ),
]

# Click hands a group's context settings down to its sub-commands, so `-h` works on every one.
HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(
    name="cleanpairs",
    context_settings=HELP_OPTIONS,
    help="Find and fix mismatched image-caption pairs in image-text corpora.",
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def reports_errors(fn: F) -> F:
    """Turn a CleanpairsError into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CleanpairsError as err:
            _fail(str(err))
        except KeyboardInterrupt:
            typer.echo("interrupted; nothing was written", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def parse_params(items: list[str]) -> dict[str, str]:
    """``["epochs=5", "lr=1e-3"]`` -> ``{"epochs": "5", "lr": "1e-3"}``."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise InputError(f"--param takes NAME=VALUE; got {item!r}")
        out[name.strip()] = value.strip()
    return out


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cleanpairs {cleanpairs.__version__}")
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def root(
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Find and fix mismatched image-caption pairs in image-text corpora."""
    # Click's own no-args help goes to stderr, so `cleanpairs | less` would show nothing.
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit()


def percent(x: float | None) -> str:
    """A share as a percentage with one decimal, or n/a."""
    return "n/a" if x is None else f"{100 * x:.1f}%"
