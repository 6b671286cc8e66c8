"""The ray engine: each task a Ray task, on a local Ray started for the run or on a cluster.

Plain tasks, not an actor pool: a step gets a whole shard (thousands of pairs), so loading a
fitted scorer from disk at its start costs little beside reading, embedding and scoring the
shard, and plain tasks are what Ray retries and reschedules most simply when a node goes away.

``ray`` is imported only when this engine runs, so that cleanpairs works without the extra.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import re
import socket
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType
from typing import Any, TypeVar

from tqdm.auto import tqdm

from cleanpairs.errors import CleanpairsError, ParameterError, first_line

T = TypeVar("T")
R = TypeVar("R")


def import_ray() -> ModuleType:
    """Return the ``ray`` module, or raise :class:`ParameterError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ParameterError("the ray engine needs Ray: pip install 'cleanpairs[ray]'") from None
    return ray


def _call(step: Callable[[T], R], task: T) -> R:
    # The step travels as an argument (put in the object store once) rather than as the remote
    # function itself, so that a functools.partial carrying a run's settings works too.
    return step(task)


@contextlib.contextmanager
def _session(ray: ModuleType, address: str | None, num_cpus: int | None) -> Iterator[None]:
    """Use the Ray this process already has, or start (connect to) one and shut it down after."""
    if ray.is_initialized():
        if address is not None:  # another cluster than this one, perhaps: say so, do not guess
            raise ParameterError("ray_address cannot be used: this process has already initialised Ray; "
                                 "leave ray_address unset to run there, or call ray.shutdown() first")
        yield
        return
    # No dashboard, no worker output relayed, only errors logged: Ray stays off the user's
    # terminal (it then needs no environment variables to be quiet, tried with Ray 2.60).
    settings: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.ERROR,
    }
    try:
        if address is None:
            # "local" starts a fresh Ray even where RAY_ADDRESS or a `ray start` cluster
            # exists. (Its workers import what is installed, the script's folder and the
            # working folder; handing them this process's whole sys.path through a
            # runtime_env cost about 4 s more per run here, so steps live in packages.)
            ray.init(address="local", num_cpus=num_cpus, **settings)
        else:
            _check_reachable(address)
            ray.init(address=address, **settings)
    except (ConnectionError, ValueError, RuntimeError) as err:
        where = f"connect to Ray at {address}" if address else "start a local Ray"
        reason = first_line(err)
        raise ParameterError(f"the ray engine cannot {where}: {reason}") from None
    try:
        yield
    finally:
        ray.shutdown()


_HOST_PORT = re.compile(r"(?:ray://)?\[?(?P<host>[^\[\]/]+?)\]?:(?P<port>\d+)")


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Raise :class:`ConnectionError` unless ``host:port`` accepts a connection: Ray itself
    would retry an address nobody answers at for minutes, logging a line every few seconds."""
    found = _HOST_PORT.fullmatch(address)
    if found is None:  # "auto" and the like: Ray answers those at once
        return
    try:
        with socket.create_connection((found["host"], int(found["port"])), timeout=timeout):
            pass
    except OSError as err:
        raise ConnectionError(f"nothing answers there ({err.strerror or type(err).__name__})") from None


def run_ray(
    step: Callable[[T], R],
    tasks: Sequence[T],
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    progress: bool = False,
    description: str = "",
) -> list[R]:
    """Run ``step`` on each task as a Ray task with one CPU; return the results in task order.

    Parameters
    ----------
    step
        A picklable callable (a top-level function, or a ``functools.partial`` of one).
    tasks
        Picklable tasks.
    address
        A Ray cluster to connect to (``"auto"``, ``"host:port"`` or ``"ray://host:port"``);
        ``None`` starts a local Ray for this run. Either is shut down at the end. Where this
        process has already initialised Ray, that Ray is used and left running (and an
        ``address`` is refused).
    num_cpus
        The most tasks running at once. A local Ray started here gets this many CPUs (``None``:
        every CPU of the machine); on an existing Ray it caps the tasks in flight.
    progress
        Show a progress bar (only when stderr is a terminal).
    description
        The progress bar's label.

    Returns
    -------
    list
        ``step(task)`` for each task, in task order, whatever order they finished in.

    Raises
    ------
    ParameterError
        Ray is not installed, cannot be started or reached, ``address`` is given where this
        process already runs Ray, or ``step`` or a task cannot be pickled.
    CleanpairsError
        The first one a step raised, as it was raised (not wrapped in Ray's error).
    """
    ray = import_ray()
    if not tasks:
        return []
    with _session(ray, address, num_cpus):
        return _run(ray, step, tasks, num_cpus, progress, description)


def _run(
    ray: ModuleType,
    step: Callable[[T], R],
    tasks: Sequence[T],
    num_cpus: int | None,
    progress: bool,
    description: str,
) -> list[R]:
    from ray.exceptions import RayTaskError

    with _unpicklable(f"the step {_name(step)}"):
        step_ref = ray.put(step)
    remote = ray.remote(num_cpus=1)(_call)
    # A window of tasks in flight rather than all at once: thousands of shards would otherwise
    # all sit in Ray's queue, and a failure could not stop the ones not yet started.
    cpus = int(ray.cluster_resources().get("CPU", 1)) or 1
    window = num_cpus if num_cpus is not None else 2 * cpus
    results: list[Any] = [None] * len(tasks)
    pending: dict[Any, int] = {}
    submitted = 0
    with tqdm(total=len(tasks), desc=description, unit="task", leave=False,
              disable=None if progress else True) as bar:
        try:
            while submitted < len(tasks) or pending:
                while submitted < len(tasks) and len(pending) < window:
                    with _unpicklable(f"task {submitted}"):
                        pending[remote.remote(step_ref, tasks[submitted])] = submitted
                    submitted += 1
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    index = pending.pop(ref)  # before get: a failed task is not cancelled again
                    results[index] = ray.get(ref)
                    bar.update(1)
        except RayTaskError as err:
            _cancel(ray, pending)
            if isinstance(err.cause, CleanpairsError):
                raise err.cause from None
            raise
        except BaseException:
            _cancel(ray, pending)
            raise
    return results


def _cancel(ray: ModuleType, pending: dict[Any, int], settle_s: float = 30.0) -> None:
    """Stop the tasks not yet finished and wait until they have stopped.

    On a Ray started here shutting down would stop them too, but on a cluster (or a Ray the
    caller holds) they would go on writing shards for a run that has already failed. ``force``
    ends a running step at once (a gentle cancel reaches it only at its next Python line, after
    a long read or model call); the half-written temporary it leaves is swept by the next write
    of that output (``atomic_output``). A task Ray is handing to a worker at that moment can
    miss the cancel and finish: waiting for every one to settle means none is still running
    when the caller gets the error.
    """
    refs = list(pending)
    for ref in refs:
        with contextlib.suppress(Exception):
            ray.cancel(ref, force=True)
    with contextlib.suppress(Exception):
        ray.wait(refs, num_returns=len(refs), timeout=settle_s)


def _name(step: Callable[..., Any]) -> str:
    inner = getattr(step, "func", step)  # a functools.partial names the function it wraps
    return getattr(inner, "__qualname__", type(inner).__name__)


@contextlib.contextmanager
def _unpicklable(what: str) -> Iterator[None]:
    """Turn Ray's page-long serialisation report into one line naming what could not be sent."""
    try:
        yield
    except (TypeError, AttributeError, pickle.PicklingError) as err:
        root: BaseException = err
        while root.__cause__ is not None:  # Ray's report wraps the pickler's own sentence
            root = root.__cause__
        raise ParameterError(f"the ray engine cannot send {what} to its workers: {root}") from None
