"""Rematch wall time and peak memory at 10k, 100k and 1M pairs of synthetic embeddings.

Each size runs in a fresh process so that its peak resident memory (VmHWM) is its own.
The corpus: images in a 256-d shared space, five captions per image near their image, a
384-d caption space (as the text encoder's, which `score --rematch` passes) where captions
of one image share a topic, 20% of the captions moved to other pairs and marked noisy
(p_clean 0.1). Results are merged into
docs/benchmarks.json under "rematch_scale"; benchmarks/compose.py renders them into
docs/benchmarks.md, as `make bench` does.

    python benchmarks/rematch.py [--sizes 10000,100000,1000000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DIM = 256
CAPTION_DIM = 384
NOISE = 0.2


def synthetic(n_pairs: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    n_images = n_pairs // 5
    images = rng.normal(size=(n_images, DIM)).astype(np.float32)
    image_index = np.repeat(np.arange(n_images), 5)
    texts = images[image_index] + 0.8 * rng.normal(size=(n_pairs, DIM)).astype(np.float32)
    topics = rng.normal(size=(n_images, CAPTION_DIM)).astype(np.float32)
    captions = topics[image_index] + 1.5 * rng.normal(size=(n_pairs, CAPTION_DIM)).astype(np.float32)
    moved = np.flatnonzero(rng.random(n_pairs) < NOISE)
    source = np.arange(n_pairs)
    source[moved] = rng.permutation(moved)
    p_clean = np.where(image_index[source] == image_index, 0.9, 0.1).astype(np.float32)
    return images, texts[source], captions[source], image_index, image_index[source], p_clean


def reset_peak_rss() -> None:
    """Start VmHWM again from the current resident size (Linux: clear_refs 5)."""
    Path("/proc/self/clear_refs").write_text("5")


def rss_mib(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def one_size(n_pairs: int) -> dict:
    from cleanpairs.core.rematch import rematch_pairs
    from cleanpairs.metrics import rematch_metrics

    images, texts, captions, image_index, caption_image, p_clean = synthetic(n_pairs)
    reset_peak_rss()
    before = rss_mib()
    start = time.perf_counter()
    found = rematch_pairs(images, texts, image_index, p_clean, caption_space=captions)
    wall = time.perf_counter() - start
    quality = rematch_metrics(found.index, found.score, image_index, caption_image)
    return {
        "pairs": n_pairs,
        "candidates": found.info["candidates"],
        "wall_s": round(wall, 2),
        "us_per_pair": round(1e6 * wall / n_pairs, 2),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "rss_before_mib": round(before, 1),
        "rematch_extra_mib": round(peak_rss_mib() - before, 1),
        "accuracy": round(quality["accuracy"], 4),
        "coverage": round(quality["coverage"], 4),
    }


def render(rows: list[dict]) -> str:
    lines = [
        "### Rematch at scale (synthetic: 256-d shared space, 384-d caption space, 20% noisy; "
        "defaults k=10, mass 0.5, block 128)",
        "",
        "Each size in a fresh process. `before`: resident memory with the corpus's embeddings "
        "loaded (at 1M pairs the captions alone are 2.5 GiB); `peak`: the process's peak "
        "resident memory during rematching (VmHWM, reset just before); `extra` = peak - before.",
        "",
        "| pairs | mismatched | wall s | us / pair | before MiB | peak MiB | extra MiB | accuracy "
        "| coverage |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['pairs']:,} | {r['candidates']:,} | {r['wall_s']} | {r['us_per_pair']} | "
            f"{r['rss_before_mib']} | {r['peak_rss_mib']} | {r['rematch_extra_mib']} | "
            f"{r['accuracy']} | {r['coverage']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_size(args.one)))
        return
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        done = subprocess.run(
            [sys.executable, __file__, "--one", str(size)], capture_output=True, text=True, check=True
        )
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    results = ROOT / "docs" / "benchmarks.json"
    data = json.loads(results.read_text()) if results.exists() else {}
    data["rematch_scale"] = rows
    results.write_text(json.dumps(data, indent=1))
    print(f"merged into {results}; benchmarks/compose.py renders docs/benchmarks.md")

if __name__ == "__main__":
    main()
