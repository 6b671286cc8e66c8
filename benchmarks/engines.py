"""What the ray engine costs on this machine: starting and stopping a local Ray, and each task.

Start-up is the wall time of ``run_tasks`` on one task that does nothing, on a Ray the engine
starts and shuts down (the local engine does the same in microseconds). Per-task overhead is
the wall time per task of many tasks that do nothing, on a Ray started once; a step over a
shard (read, embed, score, write: seconds) dwarfs it. Prints a Markdown table.

    python benchmarks/engines.py [--cpus 2] [--tasks 400]
"""

from __future__ import annotations

import argparse
import logging
import time

from cleanpairs.engines import run_tasks


def nothing(task: int) -> int:
    """A step that does no work, so that only the engine's cost is measured."""
    return task


def _wall(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=400)
    args = parser.parse_args()
    import ray

    rows = []
    local = _wall(lambda: run_tasks(nothing, list(range(args.tasks))))
    rows.append(("local engine, per task", f"{1e6 * local / args.tasks:.1f} µs"))
    for attempt in (1, 2):
        took = _wall(lambda: run_tasks(nothing, [0], engine="ray", num_cpus=args.cpus))
        rows.append((f"ray engine, start + 1 task + shutdown (run {attempt})", f"{took:.2f} s"))
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR)
    try:
        warm = _wall(lambda: run_tasks(nothing, list(range(2 * args.cpus)), engine="ray"))
        rows.append((f"ray engine, first {2 * args.cpus} tasks on a fresh Ray (workers start)",
                     f"{warm:.2f} s"))
        many = _wall(lambda: run_tasks(nothing, list(range(args.tasks)), engine="ray"))
        rows.append((f"ray engine, per task ({args.tasks} tasks, {args.cpus} CPUs)",
                     f"{1e3 * many / args.tasks:.2f} ms"))
    finally:
        ray.shutdown()
    print("| measure | time |\n| --- | --- |")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
