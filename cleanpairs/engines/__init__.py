"""Executors that run one step function over a list of tasks (DESIGN, Scale).

An engine knows nothing of methods or shards: it calls ``step(task)`` for every task and
returns the results in task order. ``local`` runs them in this process; ``ray`` runs them as
Ray tasks on a local Ray or an existing cluster (the ``ray`` extra). The step must be a
picklable top-level function (or a ``functools.partial`` of one), idempotent, and write its
outputs atomically, so that a task Ray retries or a rerun repeats does no harm.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from cleanpairs.engines.local import run_local
from cleanpairs.engines.ray import run_ray
from cleanpairs.errors import ParameterError

T = TypeVar("T")
R = TypeVar("R")

ENGINES = ("local", "ray")

__all__ = ["ENGINES", "check_engine", "run_tasks"]


def check_engine(engine: str, *, ray_address: str | None = None, num_cpus: int | None = None) -> None:
    """Check an engine and its settings before any work (Ray is imported to see it is there).

    Raises
    ------
    ParameterError
        An unknown engine, a ray setting given to the local engine, a ``num_cpus`` that is not
        a positive whole number, or the ray engine without Ray installed.
    """
    if engine not in ENGINES:
        raise ParameterError(f"unknown engine {engine!r}; choose local or ray")
    if num_cpus is not None and (isinstance(num_cpus, bool) or not isinstance(num_cpus, int) or num_cpus < 1):
        raise ParameterError(f"num_cpus must be a whole number of at least 1; got {num_cpus!r}")
    if engine == "local":
        for name, value in (("ray_address", ray_address), ("num_cpus", num_cpus)):
            if value is not None:
                raise ParameterError(f"{name} applies to the ray engine only; the local engine runs "
                                     "one task at a time in this process")
    else:
        from cleanpairs.engines.ray import import_ray

        import_ray()


def run_tasks(
    step: Callable[[T], R],
    tasks: Sequence[T],
    *,
    engine: str = "local",
    ray_address: str | None = None,
    num_cpus: int | None = None,
    progress: bool = False,
    description: str = "",
) -> list[R]:
    """Run ``step`` on every task with the chosen engine; return the results in task order.

    Parameters
    ----------
    step
        The function run on each task: top-level (picklable) for the ray engine.
    tasks
        The tasks: plain picklable data (paths, numbers, dicts, dataclasses of them).
    engine
        ``"local"`` (in this process, one task after the other) or ``"ray"``.
    ray_address
        The ray engine's cluster (``"auto"``, ``"host:port"``, ``"ray://host:port"``); ``None``
        starts a local Ray for the run.
    num_cpus
        The ray engine's most tasks at once (and the CPUs of the local Ray it starts).
    progress
        Show a progress bar (only when stderr is a terminal).
    description
        The progress bar's label.

    Returns
    -------
    list
        ``step(task)`` for each task, in task order; the same whichever engine ran them.

    Raises
    ------
    ParameterError
        An unknown engine, a ray setting given to the local engine, a ``num_cpus`` that is not
        a positive whole number, or the ray engine without Ray installed.
    CleanpairsError
        The first one a step raised, as it was raised.
    """
    check_engine(engine, ray_address=ray_address, num_cpus=num_cpus)
    tasks = list(tasks)
    if engine == "local":
        return run_local(step, tasks, progress=progress, description=description)
    return run_ray(step, tasks, address=ray_address, num_cpus=num_cpus, progress=progress,
                   description=description)
