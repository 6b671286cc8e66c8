"""Peak memory and wall time of the rematch across shards, for one corpus cut into more and more
shards: the step must not grow with the number of shards, only with the flagged pairs.

The corpus is `benchmarks/scale.py`'s (5 captions per image, 40% shuffled, 128-d precomputed
embeddings), cut into 1, 10 and 100 shards. Each is scored once with `similarity --rematch`;
then the rematch step alone (`rematch_shards`: join the flagged pairs, faiss, partial OT in
blocks, the columns into every shard) is run again in a fresh process, so that its peak
resident memory (VmHWM) is its own; torch (through POT), faiss and pyarrow take most of it
before the step starts, shown beside it.

    python benchmarks/rematch_shards.py [--pairs 50000] [--shards 1,10,100] [--work /tmp/rematch-shards]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import write_corpus


def cut(corpus: Path, folder: Path, shards: int) -> Path:
    """The corpus's pairs in ``shards`` parquet shards of (nearly) equal size."""
    if folder.is_dir():
        return folder
    table = pq.read_table(sorted(corpus.glob("*.parquet"))[0])
    folder.mkdir(parents=True)
    size = -(-table.num_rows // shards)
    for s in range(shards):
        pq.write_table(table.slice(s * size, size), folder / f"{s:05d}.parquet")
    return folder


def _peak_mib() -> int:
    status = Path("/proc/self/status").read_text().splitlines()
    return round(next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024)


def measure(out: Path) -> dict:
    """The rematch step of the run in ``out``, again, in this process."""
    import faiss  # noqa: F401  (imported before the baseline, as the step imports it)
    import ot  # noqa: F401

    from cleanpairs.sharded import RUN_FILE
    from cleanpairs.sharded_rematch import MATCHES, REMATCH_FOLDER, REMATCH_MARKER_SUFFIX, rematch_shards

    imported = _peak_mib()

    (out / REMATCH_FOLDER / MATCHES).unlink(missing_ok=True)
    for marker in out.glob(f"*{REMATCH_MARKER_SUFFIX}"):
        marker.unlink()
    names = sorted(p.name for p in out.glob("*.parquet") if not p.name.startswith("_"))
    settings = json.loads((out / RUN_FILE).read_text())["rematch"]
    start = time.perf_counter()
    info = rematch_shards(out, names, settings)
    wall = time.perf_counter() - start
    return {"shards": len(names), "flagged": info["candidates"], "rematched": info["rematched"],
            "rematch_s": round(wall, 1), "peak_rss_mib": _peak_mib(),
            "after_imports_mib": imported}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=50_000)
    parser.add_argument("--shards", default="1,10,100")
    parser.add_argument("--work", type=Path, default=Path("/tmp/cleanpairs-rematch-shards"))
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one)))
        return
    corpus = write_corpus(args.work / f"corpus-{args.pairs}", args.pairs)
    exe = Path(sys.executable).parent / "cleanpairs"
    rows = []
    for shards in (int(s) for s in args.shards.split(",")):
        folder = cut(corpus, args.work / f"in-{args.pairs}-{shards}", shards)
        out = args.work / f"out-{args.pairs}-{shards}"
        subprocess.run([str(exe), "score", str(folder), "-o", str(out), "--encoder", "precomputed",
                        "--method", "similarity", "--rematch", "--device", "cpu", "--no-progress"],
                       check=True, capture_output=True)  # fmt: skip
        done = subprocess.run([sys.executable, __file__, "--one", str(out)], check=True, capture_output=True,
                              text=True)  # fmt: skip
        rows.append(json.loads(done.stdout))
        print(json.dumps(rows[-1]), flush=True)
    print("| shards | flagged pairs | rematched | rematch step (s) | peak RSS (MiB) | of it, imports (MiB) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['shards']} | {r['flagged']:,} | {r['rematched']:,} | {r['rematch_s']} "
              f"| {r['peak_rss_mib']} | {r['after_imports_mib']} |")


if __name__ == "__main__":
    main()
