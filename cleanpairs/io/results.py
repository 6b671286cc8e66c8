"""A benchmark's result folder: one CSV row per run (appended as runs finish, so a stopped
benchmark resumes), per-pair score samples for the histograms, tables and figures."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from cleanpairs.errors import InputError
from cleanpairs.io.atomic import atomic_output

RESULTS_CSV = "results.csv"
PAIR_SCORES = "pair_scores"


def read_result_rows(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of ``folder/results.csv`` (numbers parsed back), or none when it does not exist."""
    path = Path(folder) / RESULTS_CSV
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return [{k: _parse(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def _parse(text: str) -> Any:
    if text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


def write_result_rows(folder: str | os.PathLike, rows: list[dict[str, Any]], columns: list[str]) -> Path:
    """Write ``rows`` as ``folder/results.csv`` in full (atomically), columns in the given order."""
    path = Path(folder) / RESULTS_CSV
    with atomic_output(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _format(row.get(k)) for k in columns})
    return path


def _format(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return value


def save_pair_scores(folder: str | os.PathLike, name: str, p_clean: np.ndarray, is_clean: np.ndarray) -> None:
    """Keep one run's per-pair posteriors and truth (float16, for the histograms)."""
    target = Path(folder) / PAIR_SCORES / f"{name}.npz"
    with atomic_output(target) as tmp, tmp.open("wb") as handle:
        np.savez_compressed(handle, p_clean=p_clean.astype(np.float16), is_clean=is_clean.astype(bool))


def load_pair_scores(folder: str | os.PathLike, name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """A run's saved posteriors and truth, or ``None`` if that run kept none."""
    path = Path(folder) / PAIR_SCORES / f"{name}.npz"
    if not path.exists():
        return None
    with np.load(path) as data:
        return data["p_clean"].astype(np.float32), data["is_clean"]


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a text file atomically."""
    path = Path(path)
    with atomic_output(path) as tmp:
        tmp.write_text(text)
    return path


def save_figure(figure: Any, path: str | os.PathLike) -> Path:
    """Save a matplotlib figure as PNG atomically and release it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_output(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path


def prepare_results_folder(folder: str | os.PathLike, *, resume: bool) -> Path:
    """Create the results folder; refuse to mix a new benchmark into an old one unless resuming."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder} is a file; the benchmark writes a folder of results")
    if (folder / RESULTS_CSV).exists() and not resume:
        raise InputError(
            f"{folder} already holds benchmark results; pass --resume to add to them, or choose another -o"
        )
    folder.mkdir(parents=True, exist_ok=True)
    return folder


SETTINGS = "settings.json"


def read_settings(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The settings a results folder was made with, or ``None``."""
    path = Path(folder) / SETTINGS
    return json.loads(path.read_text()) if path.exists() else None


def write_settings(folder: str | os.PathLike, settings: dict[str, Any]) -> Path:
    """Record the settings of a benchmark (JSON, as :func:`read_settings` reads them back)."""
    return write_text(Path(folder) / SETTINGS, json.dumps(settings, indent=1, sort_keys=True))
