"""Rematching across the shards of a sharded run: flagged pairs of every shard, one faiss index,
partial OT in blocks (DESIGN, Scale).

While each shard is scored, the embeddings the rematch compares of the pairs it flags
(``p_clean`` below the threshold) are saved beside the scores, in ``_rematch/NAME/``
(:mod:`cleanpairs.io.flagged`), before the shard's completion marker. Once every shard is
scored, :func:`rematch_shards` joins the flagged pairs of all shards, matches them with
:func:`cleanpairs.core.rematch.match_flagged` (the step the one-file ``--rematch`` runs), saves
the matches (``_rematch/matches.npz``), and writes the partners into each scores shard
(``cp_rematch_key``, ``cp_rematch_score``, as a one-file run does), atomically, then the
shard's marker ``NAME.rematch.json``. A run killed at any point carries on from what is there;
the result does not depend on where it was killed.

The flagged pairs' two matrices are joined into memory-mapped files (one shard open at a
time); memory holds faiss's copy of them and the candidate lists, never a shard's other pairs,
so it does not grow with the number of shards beyond the flagged pairs. Images are told
apart per shard: an image in two shards counts as two images.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cleanpairs.contract import Heads, PairEmbeddings
from cleanpairs.core.rematch import (
    REMATCH_DEFAULTS,
    caption_rows,
    check_rematch_params,
    describe_images,
    match_flagged,
    shared_space,
)
from cleanpairs.io.atomic import atomic_output
from cleanpairs.io.flagged import (
    Flagged,
    joined_matrix,
    read_flagged,
    read_matches,
    write_flagged,
    write_matches,
)

REMATCH_FOLDER = "_rematch"
MATCHES = "matches.npz"
REMATCH_MARKER_SUFFIX = ".rematch.json"


def rematch_settings(settings: dict[str, Any] | None) -> dict[str, Any]:
    """The rematch settings with their defaults, checked (one line per bad value)."""
    full = {**REMATCH_DEFAULTS, **(settings or {})}
    check_rematch_params(**full)
    return full


def flagged_folder(run_folder: str | os.PathLike, name: str) -> Path:
    """Where the shard whose scores file is ``name`` keeps its flagged pairs."""
    return Path(run_folder) / REMATCH_FOLDER / name[: -len(".parquet")]


def rematch_marker(run_folder: str | os.PathLike, name: str) -> Path:
    """The marker of a scores shard whose rematch columns are written."""
    return Path(run_folder) / (name[: -len(".parquet")] + REMATCH_MARKER_SUFFIX)


def flag_shard(
    pairs: PairEmbeddings,
    rows: np.ndarray,
    keys: pa.Array,
    p_clean: np.ndarray,
    heads: Heads | None,
    threshold: float,
) -> Flagged:
    """The pairs of one shard below ``threshold``, embedded as the rematch compares them.

    ``rows`` are the scored pairs' rows in the shard and ``keys`` every row's key. Images and
    captions meet in the space of ``heads`` (the encoder's own where the method trained none
    and the encoder is aligned), captions meet captions in the text encoder's space, and an
    image is described with the captions its shard keeps for it, as in the one-file rematch.

    Raises
    ------
    ParameterError
        No heads and an encoder whose two spaces are separate: nothing to match in.
    """
    p_clean = np.asarray(p_clean, dtype=np.float64)
    if not len(p_clean):
        empty = np.zeros((0, 0), dtype=np.float32)
        none = np.zeros(0, dtype=np.int64)
        return Flagged(empty, empty, none, none, pc.take(keys, pa.array(none)), 0)
    images, texts = shared_space(pairs, heads)
    noisy = np.flatnonzero(p_clean < threshold)
    image_index = np.asarray(pairs.image_index, dtype=np.int64)
    if len(noisy):
        described = describe_images(images, texts, image_index, p_clean >= threshold, 1.0, pairs.texts)
        described = described[image_index[noisy]]
        captions = caption_rows(texts, pairs.texts, noisy)
    else:
        dim = images.shape[1] + pairs.texts.shape[1]
        described = captions = np.zeros((0, dim), dtype=np.float32)
    at = np.asarray(rows, dtype=np.int64)[noisy]
    return Flagged(
        described=described.astype(np.float32),
        captions=captions.astype(np.float32),
        rows=at,
        images=image_index[noisy],
        keys=pc.take(keys, pa.array(at, pa.int64())),
        n_images=len(images),
    )


def save_flagged(
    run_folder: str | os.PathLike,
    name: str,
    pairs: PairEmbeddings,
    rows: np.ndarray,
    keys: pa.Array,
    p_clean: np.ndarray,
    heads: Heads | None,
    threshold: float,
) -> None:
    """Save the flagged pairs of the shard scored into ``name`` (see :func:`flag_shard`).

    A shard scored again has no rematch columns yet: its rematch marker goes first.
    """
    rematch_marker(run_folder, name).unlink(missing_ok=True)
    write_flagged(flagged_folder(run_folder, name), flag_shard(pairs, rows, keys, p_clean, heads, threshold))


@dataclass(frozen=True)
class ColumnsTask:
    """One scores shard to give its rematch columns: plain data, for any engine."""

    output: str
    marker: str
    rows: list[int]
    partner_keys: list[Any]
    scores: list[float]
    info: dict[str, Any]


def write_rematch_columns(task: ColumnsTask) -> dict[str, Any]:
    """The per-shard step of the rematch: the partners into the scores shard, then its marker."""
    import pyarrow.parquet as pq

    from cleanpairs.io.scores import read_run_metadata, write_scores
    from cleanpairs.schema import OUTPUT_COLUMNS, REMATCH_KEY, REMATCH_SCORE

    table = pq.read_table(task.output)
    meta = read_run_metadata(task.output)
    n = table.num_rows
    rows = np.asarray(task.rows, dtype=np.int64)
    score = np.full(n, np.nan, dtype=np.float32)
    score[rows] = np.asarray(task.scores, dtype=np.float32)
    # Each row's position in the partner list, or -1: the keys keep the key column's type.
    slot = np.full(n, -1, dtype=np.int64)
    slot[rows] = np.arange(len(rows))
    key_type = table.column(REMATCH_KEY).type
    partners = pa.array(task.partner_keys, type=key_type)
    rematch_key = pc.if_else(
        pa.array(slot < 0), pa.nulls(n, key_type), pc.take(partners, pa.array(np.where(slot < 0, 0, slot)))
    ) if len(rows) else pa.nulls(n, key_type)
    columns = {name: table.column(name).combine_chunks() for name in OUTPUT_COLUMNS}
    columns[REMATCH_KEY] = rematch_key
    columns[REMATCH_SCORE] = pa.array(score, type=pa.float32(), from_pandas=True)
    meta.extra = {**meta.extra, "rematch": task.info}
    write_scores(table, columns, meta, Path(task.output))
    stats = {"output": os.path.basename(task.output), "rematched": len(rows)}
    with atomic_output(task.marker) as tmp:
        tmp.write_text(json.dumps(stats, indent=2, sort_keys=True))
    return stats


def forget_matches(run_folder: str | os.PathLike) -> None:
    """Drop saved matches: shards are about to be scored (again), so they are matched again."""
    (Path(run_folder) / REMATCH_FOLDER / MATCHES).unlink(missing_ok=True)


def rematch_shards(
    run_folder: str | os.PathLike,
    names: list[str],
    settings: dict[str, Any],
    *,
    engine: str = "local",
    ray_address: str | None = None,
    progress: bool = False,
    use_gpu: bool = False,
) -> dict[str, Any]:
    """Rematch the flagged pairs of the scored shards ``names`` of ``run_folder``, across shards.

    Returns
    -------
    dict
        The settings and counts (``candidates``, ``rematched``), as the one-file rematch reports.
    """
    from cleanpairs.engines import run_tasks

    out = Path(run_folder)
    flagged = [read_flagged(flagged_folder(out, name)) for name in names]
    counts = np.array([len(f) for f in flagged], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)])
    info = {**{key: settings[key] for key in ("k", "mass", "threshold", "block")},
            "caption_weight": 1.0, "candidates": int(starts[-1])}  # fmt: skip
    matches = out / REMATCH_FOLDER / MATCHES
    if matches.exists():
        partner, margin = read_matches(matches)
    else:
        folders = [flagged_folder(out, name) for name in names]
        partner, margin = _match(out / REMATCH_FOLDER, folders, flagged, settings, use_gpu=use_gpu)
        write_matches(matches, partner, margin)
    info["rematched"] = int(np.sum(partner >= 0))
    all_keys = pa.concat_arrays([f.keys for f in flagged]) if flagged else pa.array([])
    tasks = []
    for i, name in enumerate(names):
        marker = rematch_marker(out, name)
        if marker.exists():
            continue
        mine = np.arange(starts[i], starts[i + 1])
        took = mine[partner[mine] >= 0]
        tasks.append(
            ColumnsTask(
                output=os.fspath(out / name),
                marker=os.fspath(marker),
                rows=flagged[i].rows[took - starts[i]].tolist(),
                partner_keys=pc.take(all_keys, pa.array(partner[took])).to_pylist(),
                scores=margin[took].tolist(),
                info=info,
            )
        )
    run_tasks(write_rematch_columns, tasks, engine=engine, ray_address=ray_address, progress=progress,
              description="rematch columns")  # fmt: skip
    return info


def _match(
    folder: Path, folders: list[Path], flagged: list[Flagged], settings: dict[str, Any], *, use_gpu: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Partners among all shards' flagged pairs (rows counted across shards) and their margins."""
    total = sum(len(f) for f in flagged)
    if total == 0:
        return np.full(0, -1, dtype=np.int64), np.full(0, np.nan, dtype=np.float32)
    image_start = np.concatenate([[0], np.cumsum([f.n_images for f in flagged])])
    image_of = np.concatenate([np.asarray(f.images) + image_start[i] for i, f in enumerate(flagged)])
    with (
        joined_matrix(folders, "described", folder / "joined-described.npy") as described,
        joined_matrix(folders, "captions", folder / "joined-captions.npy") as captions,
    ):
        return match_flagged(
            described,
            captions,
            image_of,
            k=settings["k"],
            mass=settings["mass"],
            block=settings["block"],
            use_gpu=use_gpu,
        )
