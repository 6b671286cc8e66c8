"""Scale benchmark: `cleanpairs score SHARDS/ -o OUT/` on synthetic precomputed-embedding
corpora of growing size, in 100k-row parquet shards: wall time and peak memory of the command;
the scoring pass alone (`cleanpairs apply` of the run's scorer) against the same pass in bare
numpy (`bare_pass.py`); and at one size, a run killed with SIGKILL at about half its shards and
resumed, and the same run on the ray engine, each against the uninterrupted local run.

The corpora are what issue #15 describes: 5 captions per image, each caption a noisy linear map
of its image, 40% of the captions shuffled, 128-d float16 embeddings. Each size is generated
once under ``--work`` and reused.

    python benchmarks/scale.py --sizes 100000,1000000 --methods similarity,ncr --out docs/bench/scale.md
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from bare_pass import bare_pass

SHARD_ROWS = 100_000
DIM = 128
CAPTIONS = 5


def write_corpus(folder: Path, pairs: int, seed: int = 0) -> Path:
    """``pairs`` pairs in 100k-row shards (skipped when the folder is already complete)."""
    done = folder / "_complete"
    if done.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    mix = (rng.normal(size=(DIM, DIM)) / np.sqrt(DIM)).astype(np.float32)
    for shard, start in enumerate(range(0, pairs, SHARD_ROWS)):
        n = min(SHARD_ROWS, pairs - start)
        images = rng.normal(size=(n // CAPTIONS + 1, DIM)).astype(np.float32)
        image_of = np.arange(n) // CAPTIONS
        source = image_of.copy()
        noisy = rng.random(n) < 0.4
        source[noisy] = rng.integers(0, len(images), noisy.sum())
        texts = images[source] @ mix + 0.5 * rng.normal(size=(n, DIM)).astype(np.float32)
        emb = pa.list_(pa.float16(), DIM)
        table = pa.table(
            {
                "key": pa.array(np.arange(start, start + n)),
                "caption": pa.array([f"c{start + i}" for i in range(n)]),
                "image_id": pa.array(image_of + start // CAPTIONS),
                "image_emb": pa.FixedSizeListArray.from_arrays(
                    pa.array(images[image_of].astype(np.float16).ravel(), pa.float16()), DIM
                ).cast(emb),
                "text_emb": pa.FixedSizeListArray.from_arrays(
                    pa.array(texts.astype(np.float16).ravel(), pa.float16()), DIM
                ).cast(emb),
                "is_clean": pa.array(source == image_of),
            }
        )
        pq.write_table(table, folder / f"{shard:05d}.parquet")
    done.write_text("")
    return folder


def command(args: list[str], *, kill_when: Callable[[], bool] | None = None) -> dict:
    """Run the installed ``cleanpairs`` with ``args`` in a child process; its wall time and peak
    RSS. With ``kill_when``, the child is killed with SIGKILL as soon as it returns true."""
    exe = Path(sys.executable).parent / "cleanpairs"
    start = time.perf_counter()
    child = subprocess.Popen([str(exe), *args, "--device", "cpu", "--no-progress"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    killed = False
    while kill_when is not None and child.poll() is None:
        if kill_when():
            child.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(0.05)
    _, err = child.communicate()
    wall = time.perf_counter() - start
    if child.returncode != 0 and not killed:
        raise SystemExit(err)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"wall_s": round(wall, 1), "peak_rss_mib": round(peak / 1024)}


def score_args(corpus: Path, out: Path, method: str, *extra: str, params: tuple[str, ...] = ()) -> list[str]:
    settings = [arg for param in params for arg in ("--param", param)]
    command = ["score", str(corpus), "-o", str(out), "--encoder", "precomputed", "--method", method]
    return [*command, *settings, *extra]


def cp_columns(folder: Path) -> dict[str, bytes]:
    """The bytes of every output shard's ``cp_*`` columns, to compare two runs."""
    out = {}
    for shard in sorted(folder.glob("[!_.]*.parquet")):
        table = pq.read_table(shard)
        names = [n for n in table.column_names if n.startswith("cp_")]
        out[shard.name] = b"".join(table.column(n).to_numpy(zero_copy_only=False).tobytes() for n in names
                                   if n not in ("cp_rematch_key", "cp_status"))  # fmt: skip
    return out


def one(kind: str, corpus: Path, out: Path, method: str, params: tuple[str, ...] = ()) -> dict:
    """One measurement of ``kind`` in this (fresh) process (``params``: ``score --param`` values)."""
    if kind == "score":
        return command(score_args(corpus, out, method, params=params))
    if kind == "apply":  # the scoring pass alone: ``out`` holds a finished run and its scorer
        applied = out.with_name(out.name + "-applied")
        shutil.rmtree(applied, ignore_errors=True)
        return command(["apply", str(out / "_scorer"), str(corpus), "-o", str(applied)])
    if kind == "bare":
        bare = out.with_name(out.name + "-bare")
        shutil.rmtree(bare, ignore_errors=True)
        start = time.perf_counter()
        bare_pass(out / "_scorer", corpus, bare)
        wall = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return {"wall_s": round(wall, 1), "peak_rss_mib": round(peak / 1024)}
    if kind == "ray":
        return command(score_args(corpus, out, method, "--engine", "ray", params=params))
    if kind == "resume":  # killed when half the shards are done, then the same command again
        shards = len(list(corpus.glob("*.parquet")))
        first = command(score_args(corpus, out, method, params=params),
                        kill_when=lambda: len(list(out.glob("*.stats.json"))) >= shards // 2)  # fmt: skip
        done_at_kill = len(list(out.glob("*.stats.json")))
        second = command(score_args(corpus, out, method, params=params))
        return {"wall_s": round(first["wall_s"] + second["wall_s"], 1), "killed_after_shards": done_at_kill,
                "peak_rss_mib": max(first["peak_rss_mib"], second["peak_rss_mib"])}  # fmt: skip
    raise ValueError(kind)


def measure(kind: str, corpus: Path, out: Path, method: str, params: tuple[str, ...] = ()) -> dict:
    """``one`` in a fresh child process (``ru_maxrss`` of children is the largest so far)."""
    start = time.perf_counter()
    argv = [sys.executable, __file__, "--one", kind, str(corpus), str(out), method, *params]
    child = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if child.returncode != 0:
        raise SystemExit(child.stderr)
    result = json.loads(child.stdout.strip().splitlines()[-1])
    if kind == "bare":  # the whole program, interpreter start and imports included, as `apply`'s is
        result["wall_s"] = round(wall, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--methods", default="similarity,ncr")
    parser.add_argument("--compare-size", type=int, default=1_000_000,
                        help="the size whose runs are also resumed after a kill and run on Ray")  # fmt: skip
    parser.add_argument("--pass-sizes", default="1000000",
                        help="sizes whose scoring pass is also timed alone and in bare numpy")  # fmt: skip
    parser.add_argument("--work", type=Path, default=Path(".bench-cache/scale"))
    parser.add_argument("--out", type=Path, default=Path("docs/bench/scale.md"))
    parser.add_argument("--param", action="append", default=[],
                        help="a method parameter, NAME=VALUE, as `score --param` takes it (repeatable)")
    opts = parser.parse_args()
    params = tuple(opts.param)
    tag = "".join(f"-{p.replace('=', '_')}" for p in params)
    rows = []
    for size in (int(s) for s in opts.sizes.split(",")):
        corpus = write_corpus(opts.work / f"corpus-{size}", size)
        for method in opts.methods.split(","):
            out = opts.work / f"scored-{size}-{method}{tag}"
            row = {"pairs": size, "method": method + (f" ({', '.join(params)})" if params else "")}
            kinds = ["score"] + (["apply", "bare"] if str(size) in opts.pass_sizes.split(",") else [])
            kinds += ["resume", "ray"] if size == opts.compare_size else []
            for kind in kinds:
                folder = out.with_name(f"{out.name}-{kind}") if kind in ("resume", "ray") else out
                if kind in ("score", "resume", "ray"):
                    shutil.rmtree(folder, ignore_errors=True)
                row[kind] = measure(kind, corpus, folder, method, params)
                if kind in ("resume", "ray"):
                    row[kind]["same_output"] = cp_columns(folder) == cp_columns(out)
                print(json.dumps({"pairs": size, "method": method, kind: row[kind]}), flush=True)
            rows.append(row)
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(report(rows))


def report(rows: list[dict]) -> str:
    """The Markdown tables of the measured rows."""
    lines = [
        "| pairs | method | score wall (s) | peak RSS (MiB) | scoring pass: apply (s) | bare numpy (s) "
        "| apply vs bare throughput |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        score, apply, bare = r["score"], r.get("apply", {}), r.get("bare", {})
        ratio = f"{bare['wall_s'] / max(apply['wall_s'], 1e-9):.0%}" if apply else "–"
        lines.append(f"| {r['pairs']:,} | {r['method']} | {score['wall_s']} | {score['peak_rss_mib']} "
                     f"| {apply.get('wall_s', '–')} | {bare.get('wall_s', '–')} | {ratio} |")  # fmt: skip
    compared = [r for r in rows if "resume" in r]
    if compared:
        lines += ["", "| pairs | method | uninterrupted (s) | killed at ~50% + resumed (s) | ratio "
                  "| same output | local engine (s) | ray engine (s) | ratio | same output |",
                  "| ---: | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- |"]  # fmt: skip
        for r in compared:
            base, res, ray = r["score"]["wall_s"], r["resume"], r["ray"]
            lines.append(f"| {r['pairs']:,} | {r['method']} | {base} | {res['wall_s']} "
                         f"(killed after {res['killed_after_shards']} shards) | {res['wall_s'] / base:.2f}x "
                         f"| {res['same_output']} | {base} | {ray['wall_s']} | {ray['wall_s'] / base:.2f}x "
                         f"| {ray['same_output']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) >= 6 and sys.argv[1] == "--one":
        kind, corpus, out, method, *params = sys.argv[2:]
        print(json.dumps(one(kind, Path(corpus), Path(out), method, tuple(params))))
    else:
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        main()
