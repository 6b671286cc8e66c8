"""Scale benchmark: `cleanpairs score SHARDS/ -o OUT/` on synthetic precomputed-embedding
corpora of growing size, in 100k-row parquet shards; wall time and peak memory of the command.

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
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

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


def score(folder: Path, out: Path, method: str) -> dict:
    """Run the installed command in a child process; its wall time and peak RSS."""
    exe = Path(sys.executable).parent / "cleanpairs"
    args = [str(exe), "score", str(folder), "-o", str(out), "--encoder", "precomputed", "--method", method,
            "--device", "cpu", "--no-progress"]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"wall_s": round(wall, 1), "peak_rss_mib": round(max(peak, before) / 1024), "stdout": done.stdout}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--methods", default="similarity,ncr")
    parser.add_argument("--work", type=Path, default=Path(".bench-cache/scale"))
    parser.add_argument("--out", type=Path, default=Path("docs/bench/scale.md"))
    opts = parser.parse_args()
    rows = []
    for size in (int(s) for s in opts.sizes.split(",")):
        corpus = write_corpus(opts.work / f"corpus-{size}", size)
        for method in opts.methods.split(","):
            out = opts.work / f"scored-{size}-{method}"
            subprocess.run(["rm", "-rf", str(out)], check=True)
            # Each size and method in a fresh child: ru_maxrss of children is the largest so far.
            child = subprocess.run(
                [sys.executable, __file__, "--one", str(corpus), str(out), method],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            result = json.loads(child.stdout.strip().splitlines()[-1])
            rows.append({"pairs": size, "method": method, **result})
            print(json.dumps(rows[-1]), flush=True)
    lines = [
        "| pairs | method | wall (s) | peak RSS (MiB) |",
        "| ---: | --- | ---: | ---: |",
        *[f"| {r['pairs']:,} | {r['method']} | {r['wall_s']} | {r['peak_rss_mib']} |" for r in rows],
    ]
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--one":
        result = score(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4])
        result.pop("stdout")
        print(json.dumps(result))
    else:
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        main()
