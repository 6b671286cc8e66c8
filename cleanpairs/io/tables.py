"""Reading a corpus of image-caption pairs: parquet (file, folder of shards, glob, brace range),
csv, jsonl, webdataset tar shards, and clip-retrieval's embedding folders."""

from __future__ import annotations

import glob
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq

from cleanpairs.errors import InputError, first_line
from cleanpairs.io.embeddings import attach_embeddings, is_clip_retrieval_folder, metadata_shards
from cleanpairs.io.webdataset import is_tar, read_tar_shards, sidecar_of
from cleanpairs.schema import ROW_NUMBER_KEY, ColumnRoles, is_image_struct, resolve_roles

TABLE_SUFFIXES = (".parquet", ".csv", ".jsonl", ".json", ".ndjson")
_BRACE_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")


def image_values(column: pa.ChunkedArray | pa.Array) -> list:
    """An image column's values as paths, URLs or bytes; a Hugging Face ``Image()`` struct gives
    its ``bytes`` where it has them, else its ``path``."""
    if not is_image_struct(column.type):
        return column.to_pylist()
    return [None if v is None else (v.get("bytes") or v.get("path") or None) for v in column.to_pylist()]


def is_relative_path(value: object) -> bool:
    """True for an image reference that is a relative file path (not bytes, a URL or absolute)."""
    return isinstance(value, str) and bool(value) and "://" not in value and not os.path.isabs(value)


@dataclass(frozen=True)
class ImageFolders:
    """Where each row's relative image path resolves: rows come in runs, one per source table
    (in the order read), and a run's relative paths are relative to its table's folder.

    A scores file keeps the runs of the corpus it scored in its run metadata (``extra``:
    ``image_folders``, the absolute folder of each source, and ``source_rows``, the rows read
    from it), not in a column, so the output holds the input's columns and the ``cp_*`` ones
    only. Writers that keep a subset of the rows (``filter``, ``export``) write the runs of the
    rows they kept (:meth:`kept`).

    Attributes
    ----------
    folders
        The absolute folder of each run.
    rows
        The number of rows in each run.
    problem
        Why the runs do not describe the table (it was changed by another tool); resolving a
        relative path then raises :class:`InputError` with it, absolute paths and bytes still work.
    """

    folders: tuple[str, ...]
    rows: tuple[int, ...]
    problem: str | None = None

    @classmethod
    def of_sources(cls, sources: list[Path], rows: list[int]) -> ImageFolders:
        """The runs of a corpus read from ``sources`` holding ``rows`` rows each."""
        return cls(tuple(os.path.abspath(p.parent) for p in sources), tuple(int(n) for n in rows))

    @classmethod
    def from_metadata(cls, extra: dict, rows: int, where: str | os.PathLike) -> ImageFolders:
        """The runs a scores file's run metadata records, for its ``rows`` rows.

        Files written before the runs were recorded hold one ``image_base`` for every row.
        """
        if "image_folders" in extra and "source_rows" in extra:
            found = cls(tuple(extra["image_folders"]), tuple(int(n) for n in extra["source_rows"]))
        else:
            found = cls((os.path.abspath(extra.get("image_base", ".")),), (rows,))
        if sum(found.rows) == rows:
            return found
        if len(set(found.folders)) == 1:
            return cls(found.folders[:1], (rows,))
        problem = (
            f"{where} has {rows} rows but its metadata places {sum(found.rows)} rows in "
            f"{len(found.folders)} image folders (was it changed by another tool?), so its "
            "relative image paths cannot be resolved; write absolute paths or score the corpus again"
        )
        return cls(found.folders, found.rows, problem)

    def to_metadata(self) -> dict[str, list]:
        """The run metadata entries that record these runs."""
        return {"image_folders": list(self.folders), "source_rows": list(self.rows)}

    def index(self, start: int, count: int) -> np.ndarray:
        """The run of each of the rows ``start .. start + count - 1``."""
        ends = np.cumsum(np.asarray(self.rows, dtype=np.int64))
        return np.searchsorted(ends, np.arange(start, start + count), side="right").astype(np.int32)

    def kept(self, counts: np.ndarray) -> ImageFolders:
        """The runs of a subset of the rows that keeps ``counts[i]`` rows of run ``i``."""
        return ImageFolders(self.folders, tuple(int(n) for n in counts), self.problem)

    def resolve(self, values: list, runs: np.ndarray) -> list[str | bytes | None]:
        """Each image reference as an absolute path (relative ones joined to their row's folder),
        a URL or bytes as they are, ``None`` where empty; ``runs`` is each row's :meth:`index`.

        Raises
        ------
        InputError
            A relative path, where the runs do not describe the table.
        """
        out: list[str | bytes | None] = []
        for value, run in zip(values, runs.tolist(), strict=True):
            if not value:
                out.append(None)
            elif is_relative_path(value):
                if self.problem is not None or run >= len(self.folders):
                    raise InputError(self.problem or f"row image {value!r} has no known folder")
                out.append(os.path.join(self.folders[run], value))
            else:
                out.append(value)
        return out


@dataclass
class Corpus:
    """A corpus read into memory: the table as the user wrote it, and where its rows came from.

    Attributes
    ----------
    table
        Every input row and column, in input order, untouched.
    roles
        Which column plays which role.
    sources
        The files read, in order.
    source_index
        For each row, the position in ``sources`` of the file it came from; relative image
        paths are resolved against that file's folder.
    image_folders
        Where relative image paths resolve, when not against the folders of ``sources``: a
        scores file read back resolves them where the corpus it scored had its tables.
    """

    table: pa.Table
    roles: ColumnRoles
    sources: list[Path]
    source_index: np.ndarray
    image_folders: ImageFolders | None = None

    def __len__(self) -> int:
        return self.table.num_rows

    def keys(self) -> pa.Array:
        """The key of every row (the row number where the table has no key column)."""
        if self.roles.key == ROW_NUMBER_KEY:
            return pa.array(np.arange(self.table.num_rows, dtype=np.int64))
        return self.table.column(self.roles.key).combine_chunks()

    def captions(self) -> list[str | None]:
        if self.roles.caption is None:
            return [None] * len(self)
        return self.table.column(self.roles.caption).to_pylist()

    def folders(self) -> ImageFolders:
        """Where each row's relative image path resolves."""
        if self.image_folders is not None:
            return self.image_folders
        counts = np.bincount(self.source_index, minlength=len(self.sources))
        return ImageFolders.of_sources(self.sources, counts.tolist())

    def image_refs(self) -> list[str | bytes | None]:
        """Each row's image as an absolute path or as bytes (``None`` where missing).

        Raises
        ------
        InputError
            A relative path that cannot be resolved (see :class:`ImageFolders`).
        """
        if self.roles.image is None:
            return [None] * len(self)
        column = self.table.column(self.roles.image)
        values = image_values(column)
        if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
            return values
        folders = self.folders()
        return folders.resolve(values, folders.index(0, len(values)))


def expand_braces(text: str) -> list[str]:
    """``shards/{00000..00099}.tar`` -> the hundred names (zero padding kept), as webdataset and
    img2dataset write shard lists; a name without a range is returned as it is."""
    found = _BRACE_RANGE.search(text)
    if found is None:
        return [text]
    first, last = found.group(1), found.group(2)
    width = len(first) if first.startswith("0") else 0
    names = []
    for number in range(int(first), int(last) + 1):
        names += expand_braces(f"{text[: found.start()]}{number:0{width}d}{text[found.end() :]}")
    return names


def _is_table(path: Path) -> bool:
    return path.suffix in TABLE_SUFFIXES or is_tar(path)


def _folder_sources(path: Path) -> list[Path]:
    """A folder's shards: its tars (img2dataset's sidecar parquet files are read with them),
    else its parquet files."""
    visible = [p for p in sorted(path.iterdir()) if not p.name.startswith((".", "_"))]
    tars = [p for p in visible if is_tar(p)]
    parquets = [p for p in visible if p.suffix == ".parquet"]
    if tars:
        sidecars = {sidecar_of(t) for t in tars}
        others = [p.name for p in parquets if p not in sidecars]
        if others:
            raise InputError(
                f"folder {path} holds both tar shards and parquet tables that are not their "
                f"sidecars ({', '.join(others[:3])}); name one kind, e.g. '{path}/*.tar'"
            )
        return tars
    if not parquets:
        raise InputError(f"folder {path} holds no .parquet or .tar shards")
    return parquets


def expand_sources(source: str | os.PathLike) -> list[Path]:
    """The table files a corpus argument names: a file, a folder of shards, a glob, or a brace
    range (``shards/{00000..00099}.tar``).

    A folder holding tar shards is a webdataset: its tars are read, and a parquet file beside a
    tar with the same stem is that shard's img2dataset metadata (its sidecar), not a shard;
    any other parquet file there is refused as ambiguous. One corpus is all tars or all tables.

    Raises
    ------
    InputError
        Nothing exists at that path, the folder or glob holds no shards, a brace range names
        files that do not exist, or tars and tables are mixed.
    """
    text = os.fspath(source)
    names = expand_braces(text)
    if len(names) > 1:
        missing = [n for n in names if not Path(n).is_file()]
        if missing:
            raise InputError(
                f"{len(missing)} of the {len(names)} files {text} names do not exist (e.g. {missing[0]})"
            )
        files = [Path(n) for n in names]
    elif any(ch in text for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(text) if _is_table(Path(p)))
        if not files:
            raise InputError(f"no table files match {text}")
    else:
        path = Path(text)
        if path.is_dir():
            return _folder_sources(path)
        if not path.exists():
            raise InputError(f"no such file or folder: {text}")
        if not _is_table(path):
            raise InputError(
                f"cannot read {text}: expected a .parquet, .csv, .jsonl or .tar file, or a folder of shards"
            )
        files = [path]
    tars = [f for f in files if is_tar(f)]
    if tars and len(tars) != len(files):
        raise InputError(f"{text} names both tar shards and tables; a corpus is one kind or the other")
    return files


def read_table_file(path: Path) -> pa.Table:
    """Read one table file by its suffix; any parse failure becomes an :class:`InputError`.

    Raises
    ------
    InputError
        The file cannot be parsed as its suffix says, or holds text that is not UTF-8.
    """
    try:
        table = _parse_table_file(path)
        # Neither the parquet nor the json reader checks that text is UTF-8; a damaged
        # file would otherwise fail later, far from its name, when a caption is read.
        table.validate(full=True)
    except (pa.ArrowException, OSError) as err:
        hint = " (expected one JSON object per line)" if path.suffix in (".json", ".jsonl", ".ndjson") else ""
        raise InputError(f"cannot read {path}: {first_line(err)}{hint}") from None
    except UnicodeDecodeError:
        raise InputError(f"cannot read {path}: its column names are not UTF-8 text") from None
    _check_unique_names(table, path)
    return table


def _check_unique_names(table: pa.Table, path: Path) -> None:
    """A column named twice (a CSV header can do it) has no single role; refuse it here."""
    repeated = [name for name, count in Counter(table.column_names).items() if count > 1]
    if repeated:
        raise InputError(
            f"cannot read {path}: column {repeated[0]!r} appears more than once; column names must be unique"
        )


def _parse_table_file(path: Path) -> pa.Table:
    if path.suffix == ".parquet":
        return pq.read_table(path)
    if path.suffix == ".csv":
        # Every CSV column is read as text: a caption like "42" stays a caption.
        names = pcsv.open_csv(path).schema.names
        strings = pcsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()))
        return pcsv.read_csv(path, convert_options=strings)
    return pjson.read_json(path)


def _concat(tables: list[pa.Table], sources: list[Path]) -> pa.Table:
    if len(tables) == 1:
        return tables[0]
    first = tables[0].schema.remove_metadata()
    for table, src in zip(tables[1:], sources[1:], strict=True):
        if not table.schema.remove_metadata().equals(first):
            raise InputError(
                f"shard {src} has columns {table.schema.names} with other types than "
                f"{sources[0]} ({first.names}); all shards must share one schema"
            )
    return pa.concat_tables(tables)


def check_keys(table: pa.Table, roles: ColumnRoles) -> None:
    """Raise :class:`InputError` if the key column has nulls or repeats a key."""
    if roles.key == ROW_NUMBER_KEY:
        return
    keys = table.column(roles.key)
    if keys.null_count:
        raise InputError(f"key column {roles.key!r} has {keys.null_count} empty values")
    counts = pc.value_counts(keys)
    repeated = counts.filter(pc.greater(counts.field("counts"), 1))
    if len(repeated):
        examples = ", ".join(repr(v) for v in repeated.field("values")[:3].to_pylist())
        raise InputError(
            f"key column {roles.key!r} repeats {len(repeated)} keys (for example {examples}); "
            "keys must be unique"
        )


def _read_tables(source: str | os.PathLike) -> tuple[pa.Table, list[Path], list[int]]:
    """Every row a corpus argument names, the files read and the rows each gave."""
    if is_clip_retrieval_folder(source):
        sources = metadata_shards(source)
        tables = [read_table_file(p) for p in sources]
        table = attach_embeddings(_concat(tables, sources), source, [t.num_rows for t in tables])
        return table, sources, [t.num_rows for t in tables]
    sources = expand_sources(source)
    if is_tar(sources[0]):
        table, counts = read_tar_shards(sources)
        return table, sources, counts
    tables = [read_table_file(p) for p in sources]
    return _concat(tables, sources), sources, [t.num_rows for t in tables]


def read_pairs(
    source: str | os.PathLike,
    *,
    key_col: str | None = None,
    image_col: str | None = None,
    text_col: str | None = None,
    image_emb_col: str | None = None,
    text_emb_col: str | None = None,
) -> Corpus:
    """Read a corpus and check it against the input contract.

    Parameters
    ----------
    source
        A parquet, csv or jsonl file, a folder of parquet shards, a glob or brace range of them;
        webdataset tar shards (a file, folder, glob or brace range) in img2dataset's layout, read
        as the columns ``key``, ``image`` (bytes), ``caption`` and their json's fields; or
        clip-retrieval's output folder (``metadata/``, ``img_emb/``, ``text_emb/``), read as
        its metadata with ``image_emb`` / ``text_emb`` columns.
    key_col, image_col, text_col, image_emb_col, text_emb_col
        Column names for the roles, where the defaults do not fit (case may differ).

    Returns
    -------
    Corpus
        The rows in input order with their column roles; the same for a tar shard as for a
        parquet shard holding the same samples.

    Raises
    ------
    InputError
        Missing file, unreadable table, missing or mistyped column, zero rows, repeated keys.
    """
    table, sources, counts = _read_tables(source)
    if table.num_rows == 0:
        raise InputError(f"{os.fspath(source)} has zero rows")
    roles = resolve_roles(
        table.schema,
        key_col=key_col,
        image_col=image_col,
        text_col=text_col,
        image_emb_col=image_emb_col,
        text_emb_col=text_emb_col,
    )
    check_keys(table, roles)
    source_index = np.repeat(np.arange(len(sources), dtype=np.int32), counts)
    return Corpus(table=table, roles=roles, sources=sources, source_index=source_index)


def write_image_corpus(
    folder: str | os.PathLike,
    images: list,
    table: pa.Table,
    *,
    image_col: str = "image",
    table_name: str = "pairs.parquet",
) -> Path:
    """Write a corpus with its pictures: JPEGs under ``images/`` and a parquet table whose
    ``image_col`` holds their paths relative to the table. Pictures that are the same object
    are written once. Returns the table's path."""
    from cleanpairs.io.atomic import atomic_output, check_output_path, remove_stale_temporaries

    folder = Path(folder)
    target = folder / table_name
    check_output_path(target)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(folder / "images", every_target=True)
    names: dict[int, str] = {}
    paths = []
    for img in images:
        if id(img) not in names:
            names[id(img)] = f"images/{len(names):06d}.jpg"
            with atomic_output(folder / names[id(img)], sweep=False) as tmp:
                img.save(tmp, format="JPEG", quality=90)
        paths.append(names[id(img)])
    table = table.append_column(image_col, pa.array(paths, pa.string()))
    with atomic_output(target) as tmp:
        pq.write_table(table, tmp)
    return target


def read_keys(path: str | os.PathLike) -> list[str]:
    """Keys listed one per line in a text file (blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such file: {path}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise InputError(f"{path} is not a UTF-8 text file of keys, one per line") from None
    keys = [line.strip() for line in lines if line.strip()]
    if not keys:
        raise InputError(f"{path} lists no keys")
    return keys
