"""The local engine: every task in this process, one after the other, in order."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
R = TypeVar("R")


def run_local(
    step: Callable[[T], R], tasks: Sequence[T], *, progress: bool = False, description: str = ""
) -> list[R]:
    """Run ``step`` on each task in this process, in order.

    One task at a time on purpose: a step already parallelises its own work (image decoding,
    the encoder's threads), and running several steps at once would oversubscribe the cores.

    Parameters
    ----------
    step
        The function run on each task.
    tasks
        The tasks, run in this order.
    progress
        Show a progress bar (only when stderr is a terminal).
    description
        The progress bar's label.

    Returns
    -------
    list
        ``step(task)`` for each task, in task order. The first exception a step raises stops
        the run and propagates as it is.
    """
    results = []
    with tqdm(total=len(tasks), desc=description, unit="task", leave=False,
              disable=None if progress else True) as bar:
        for task in tasks:
            results.append(step(task))
            bar.update(1)
    return results
