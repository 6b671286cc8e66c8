"""Fit time of every method with torch's CPU threads as `cleanpairs` sets them, on an idle machine
and beside one competing CPU-bound process; and, for the choice, with 1 and with 2 threads forced.

Flickr8k train (30,000 pairs) with 40% of the captions shuffled (seed 0), offline encoder,
embeddings from the cache (run `make bench` or `cleanpairs score` on it once first; a cold cache
encodes the photos, about 6 minutes). Each fit runs in a fresh process; the competitor is a pure
Python busy loop in another process, started before the fit and stopped after it.

    python benchmarks/threads.py --cache-dir ~/.cache/cleanpairs --out docs/bench/threads.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from cleanpairs.contract import PairEmbeddings

FLICKR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "flickr8k"
WORK = Path(".bench-cache/threads")
BUSY_LOOP = "while True:\n    sum(range(100000))"


def prepare(cache_dir: Path | None) -> Path:
    """The noisy corpus's embeddings and the trusted set's, saved once as ``.npz``."""
    out = WORK / "flickr8k-shuffle40.npz"
    if out.exists():
        return out
    from cleanpairs.bench import NoiseCase, inject
    from cleanpairs.encoders import embed_corpus
    from cleanpairs.io.tables import read_pairs

    def embed(path: Path) -> PairEmbeddings:
        corpus = read_pairs(path)
        return embed_corpus(corpus, "offline", cache_dir=cache_dir, device="cpu", progress=False).pairs

    noisy_pairs, _ = inject(embed(FLICKR / "train.parquet"), NoiseCase("shuffle", 0.4, 0))
    dev = embed(FLICKR / "dev.parquet")
    noisy = noisy_pairs.images, noisy_pairs.texts, noisy_pairs.image_index
    trusted = dev.images, dev.texts[:1000], dev.image_index[:1000]
    WORK.mkdir(parents=True, exist_ok=True)
    names = ("images", "texts", "image_index")
    np.savez(out, **{f"noisy_{k}": v for k, v in zip(names, noisy, strict=True)},
             **{f"trusted_{k}": v for k, v in zip(names, trusted, strict=True)})  # fmt: skip
    return out


def fit_once(data: Path, method: str, threads: str) -> float:
    """One fit in this process; ``threads`` is ``auto`` (cleanpairs decides) or a number forced."""
    from cleanpairs.methods import get_method

    arrays = np.load(data)

    def pairs(kind: str) -> PairEmbeddings:
        images, texts, index = (arrays[f"{kind}_{k}"] for k in ("images", "texts", "image_index"))
        return PairEmbeddings(images, texts, index, np.arange(len(texts)))

    scorer = get_method(method)(seed=0, device="cpu", threads=None if threads == "auto" else int(threads))
    trusted = pairs("trusted") if scorer.needs_trusted else None
    start = time.perf_counter()
    scorer.fit(pairs("noisy"), trusted)
    return time.perf_counter() - start


def measure(data: Path, method: str, threads: str, competing: bool) -> float:
    """Wall seconds of one fit in a fresh process, alone or beside a busy loop."""
    rival = subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) if competing else None
    try:
        done = subprocess.run([sys.executable, __file__, "--one", str(data), method, threads],
                              capture_output=True, text=True, check=True)  # fmt: skip
    finally:
        if rival is not None:
            rival.kill()
            rival.wait()
    return float(done.stdout.strip().splitlines()[-1])


def _row(r: dict) -> str:
    threads = "as cleanpairs sets them" if r["threads"] == "auto" else f"{r['threads']} (forced)"
    return f"| {r['method']} | {threads} | {r['idle_s']} | {r['beside_s']} | {r['ratio']}x |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=None, help="comma-separated; default: every registered method")
    parser.add_argument("--compare", default="ncr", help="methods also fit with 1 and 2 threads forced")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("docs/bench/threads.md"))
    opts = parser.parse_args()
    data = prepare(opts.cache_dir)
    rows = []
    from cleanpairs.methods import available_methods

    methods = opts.methods.split(",") if opts.methods else available_methods()
    plan = [(m, "auto") for m in methods]
    plan += [(m, t) for m in opts.compare.split(",") if m for t in ("1", "2")]
    for method, threads in plan:
        idle = measure(data, method, threads, competing=False)
        beside = measure(data, method, threads, competing=True)
        rows.append({"method": method, "threads": threads, "idle_s": round(idle, 1),
                     "beside_s": round(beside, 1), "ratio": round(beside / idle, 2)})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    lines = [
        "| method | torch threads | fit s, idle | fit s, beside a busy process | ratio |",
        "| --- | --- | ---: | ---: | ---: |",
        *[_row(r) for r in rows],
    ]
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--one":
        print(fit_once(Path(sys.argv[2]), sys.argv[3], sys.argv[4]))
    else:
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        main()
