"""The corpus's cross-moments, gathered shard by shard before a fit on a sample with
``align=cca`` (:mod:`cleanpairs.core.alignment`): the alignment then comes from every pair of the
corpus while the heads learn from the sample.

Each task embeds a group of shards (filling the embedding cache the scoring pass reads again)
and sums their moments; the run adds the groups' sums. Groups, not shards, so that what comes
back to the driver is a bounded number of ``d x d`` sums however many shards there are.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from cleanpairs.core.alignment import CrossMoments
from cleanpairs.errors import CleanpairsError, InputError
from cleanpairs.io.tables import read_pairs

MOMENT_GROUPS = 32
"""Most tasks the moments pass is cut into (fewer where there are fewer shards)."""


@dataclass(frozen=True)
class MomentsTask:
    """Shards whose moments one worker sums: plain data, so an executor can ship it."""

    sources: tuple[str, ...]
    settings: dict[str, Any]
    """``encoder``, ``cache_dir``, ``device``, ``max_image_pixels`` and ``roles_options``."""


def group_moments(task: MomentsTask, *, skip: bool) -> dict[str, Any]:
    """The summed moments of the task's shards (as arrays; ``None`` where none was read) and
    the shards that could not be read (with ``skip``; without it the first stops the run)."""
    from cleanpairs.encoders import embed_corpus

    s = task.settings
    total: CrossMoments | None = None
    failed = []
    for source in task.sources:
        try:
            corpus = read_pairs(source, **s["roles_options"])
            embedded = embed_corpus(corpus, s["encoder"], cache_dir=s["cache_dir"], device=s["device"],
                                    progress=False, max_image_pixels=s["max_image_pixels"])  # fmt: skip
        except CleanpairsError as err:
            if not skip:
                raise InputError(f"shard {source}: {err}") from None
            failed.append(os.path.abspath(source))
            continue
        if len(embedded.rows):
            moments = CrossMoments.of_pairs(embedded.pairs)
            total = moments if total is None else total + moments
    return {"moments": None if total is None else total.to_arrays(), "failed": failed}


def corpus_moments(
    shards: list[Path],
    settings: dict[str, Any],
    *,
    engine: str,
    ray_address: str | None,
    skip: bool,
    progress: bool,
) -> CrossMoments | None:
    """The cross-moments of every scorable pair of ``shards``, gathered on the engine;
    ``None`` where no pair could be embedded.

    Raises
    ------
    InputError
        A shard cannot be read (naming it), unless ``skip``: then it is left out here, and the
        scoring pass records it.
    """
    from cleanpairs.engines import run_tasks

    groups = min(len(shards), MOMENT_GROUPS)
    tasks = [
        MomentsTask(tuple(os.fspath(p) for p in shards[g::groups]), settings) for g in range(groups)
    ]
    done = run_tasks(partial(group_moments, skip=skip), tasks, engine=engine, ray_address=ray_address,
                     progress=progress, description="corpus moments")  # fmt: skip
    total = None
    for result in done:
        if result["moments"] is not None:
            moments = CrossMoments.from_arrays(result["moments"])
            total = moments if total is None else total + moments
    return total


__all__ = ["MOMENT_GROUPS", "MomentsTask", "corpus_moments", "group_moments"]
