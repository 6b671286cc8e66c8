"""The Python API for notebooks: score, read, filter and export with pandas DataFrames.

``import cleanpairs as cp`` gives these names lazily (importing the package stays light)::

    df = cp.score("pairs.parquet", method="ncr")        # or a pyarrow Table / pandas DataFrame
    kept = cp.filter(df, thresh=0.5)
    cp.export(df, "shards/", format="webdataset")
    df = cp.read_scores("pairs.scores.parquet")          # run metadata in df.attrs["cleanpairs"]

Each is a thin layer over the functions the CLI calls (:func:`cleanpairs.pipeline.score_corpus`,
:func:`cleanpairs.io.scores.filter_scores`, :func:`cleanpairs.io.export.export_scores`).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from cleanpairs.errors import InputError
from cleanpairs.io.export import ExportCounts, export_scores
from cleanpairs.io.scores import filter_scores, open_scores, with_run_metadata
from cleanpairs.io.tables import image_values, is_relative_path
from cleanpairs.methods import DEFAULT_METHOD
from cleanpairs.schema import METADATA_KEY, RunMetadata, resolve_roles

if TYPE_CHECKING:
    import pandas as pd

ATTRS_KEY = "cleanpairs"
"""``df.attrs[ATTRS_KEY]``: the run metadata of a scores DataFrame, as a dict."""


def _as_table(data: Any, what: str) -> pa.Table | None:
    """``data`` as a pyarrow Table, or ``None`` when it is a path."""
    if isinstance(data, (str, os.PathLike)):
        return None
    if isinstance(data, pa.Table):
        return data
    if type(data).__module__.startswith("polars") and hasattr(data, "to_arrow"):
        return data.to_arrow()
    if type(data).__name__ == "DataFrame" and hasattr(data, "columns"):
        import pandas as pd

        if isinstance(data, pd.DataFrame):
            return pa.Table.from_pandas(data, preserve_index=False)
    raise InputError(
        f"{what} must be a path, a pyarrow Table or a pandas or polars DataFrame; got {type(data).__name__}"
    )


def _frame(table: pa.Table, meta: RunMetadata) -> pd.DataFrame:
    frame = table.replace_schema_metadata(None).to_pandas()
    frame.attrs[ATTRS_KEY] = dataclasses.asdict(meta)
    return frame


def read_scores(path: str | os.PathLike) -> pd.DataFrame:
    """A scores file as a DataFrame, its run metadata in ``df.attrs["cleanpairs"]``.

    Raises
    ------
    InputError
        ``path`` is not a scores file written by ``cleanpairs score``.
    """
    handle, meta = open_scores(path)
    return _frame(handle.read(), meta)


def _check_images_resolve(table: pa.Table, options: dict[str, Any]) -> None:
    """A table in memory has no folder: its image paths must be absolute (or bytes, or URLs)."""
    roles = resolve_roles(
        table.schema,
        **{k: options.get(k) for k in ("key_col", "image_col", "text_col", "image_emb_col", "text_emb_col")},
    )
    if roles.image is None:
        return
    relative = next((v for v in image_values(table.column(roles.image)) if is_relative_path(v)), None)
    if relative is not None:
        raise InputError(
            f"image column {roles.image!r} holds relative paths such as {relative!r}, which a table in "
            "memory cannot resolve; make them absolute, give the images as bytes, or pass the file's path"
        )


def score(
    data: Any,
    output: str | os.PathLike | None = None,
    *,
    method: str = DEFAULT_METHOD,
    **options: Any,
) -> pd.DataFrame:
    """Score every pair of a corpus and return it with its ``cp_*`` columns.

    Parameters
    ----------
    data
        A corpus path (anything ``cleanpairs score`` reads), a pyarrow Table, or a pandas or
        polars DataFrame. A table in memory is written to a temporary parquet file and scored from
        there, so its images must be bytes or absolute paths.
    output
        Where to write the scores file too; by default it is written to a temporary folder and
        removed once read (nothing appears beside the corpus).
    method
        A registered method (``cleanpairs methods``).
    **options
        The keywords of :func:`cleanpairs.pipeline.score_corpus` (``encoder``, ``params``,
        ``seed``, ``device``, ``key_col``, ``image_col``, ``text_col``, ``cache_dir``,
        ``rematch``, ...); ``progress`` defaults to off.

    Returns
    -------
    pandas.DataFrame
        Every input row and column plus the ``cp_*`` columns; the run metadata in
        ``df.attrs["cleanpairs"]``.

    Raises
    ------
    CleanpairsError
        As ``cleanpairs score``: bad input, method, encoder or parameter.
    """
    from cleanpairs.pipeline import score_corpus

    table = _as_table(data, "data")
    if table is not None:
        _check_images_resolve(table, options)
    options.setdefault("progress", False)
    with tempfile.TemporaryDirectory(prefix="cleanpairs-") as tmp:
        source: str | os.PathLike = data if table is None else Path(tmp) / "corpus.parquet"
        if table is not None:
            pq.write_table(table, source)
        target = output if output is not None else Path(tmp) / "scores.parquet"
        score_corpus(source, target, method=method, **options)
        return read_scores(target)


def _scores_path(scores: Any, folder: str) -> str | os.PathLike:
    """A scores path, or a scores DataFrame (with its run metadata in ``attrs``) written to ``folder``."""
    table = _as_table(scores, "scores")
    if table is None:
        return scores
    raw = getattr(scores, "attrs", {}).get(ATTRS_KEY)
    if raw is None:
        raise InputError(
            "this DataFrame carries no run metadata (df.attrs['cleanpairs']); "
            "use the one cp.score or cp.read_scores returned"
        )
    meta = RunMetadata.from_json(RunMetadata(**raw).to_json(), "the DataFrame")
    path = Path(folder) / "scores.parquet"
    pq.write_table(table.replace_schema_metadata(with_run_metadata(table.schema, meta).metadata), path)
    return path


def filter(
    scores: Any,
    output: str | os.PathLike | None = None,
    *,
    thresh: float = 0.5,
    rejected: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """The rows with ``cp_p_clean >= thresh`` of a scores file or DataFrame.

    With ``output`` (and ``rejected``) they are also written as ``cleanpairs filter`` writes
    them. The returned DataFrame keeps the run metadata in ``attrs``.

    Raises
    ------
    InputError
        Not scores, a threshold outside [0, 1], or an output that is not a ``.parquet`` name.
    """
    with tempfile.TemporaryDirectory(prefix="cleanpairs-") as tmp:
        source = _scores_path(scores, tmp)
        target = output if output is not None else Path(tmp) / "kept.parquet"
        filter_scores(source, target, thresh=thresh, rejected=rejected)
        handle = pq.ParquetFile(target)
        meta = RunMetadata.from_json(handle.schema_arrow.metadata[METADATA_KEY])
        return _frame(handle.read(), meta)


def export(
    scores: Any, output: str | os.PathLike, *, format: str = "parquet", **options: Any
) -> ExportCounts:
    """Write the kept pairs of a scores file or DataFrame as ``cleanpairs export`` does.

    ``format``: ``parquet``, ``webdataset`` or ``uids``; ``options``: the keywords of
    :func:`cleanpairs.io.export.export_scores` (``thresh``, ``shard_rows``, ``rematch``, ...).

    Raises
    ------
    InputError
        As ``cleanpairs export``; nothing is written.
    """
    with tempfile.TemporaryDirectory(prefix="cleanpairs-") as tmp:
        return export_scores(_scores_path(scores, tmp), output, format=format, **options)
