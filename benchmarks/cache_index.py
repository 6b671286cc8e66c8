"""Peak memory and lookup time of the embedding cache's index, today's and the dict it replaced.

A synthetic cache of N keys (parts of 1,024 rows, as `encode_*_cached` stores them, 4-d
embeddings so the disk stays small) is written once per size; then, each in a fresh process
so that its peak resident memory (VmHWM) is its own, the cache looks up 10,000 keys (half
of them cached) twice: the first lookup opens the index, the second reuses it. Three ways:
"index, first open": no index on disk yet, so the first lookup sorts every key in memory and
writes the index (once per cache, then every 256 new parts merge into it); "index": the
index on disk, memory-mapped; "dict": the index earlier versions built (every key of every
part in one Python dict), kept here only to compare with.

    python benchmarks/cache_index.py [--sizes 1000000,10000000] [--folder /tmp/cache-index]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

PART_ROWS = 1024
DIM = 4
ASKED = 10_000


def _digests(start: int, stop: int) -> list[bytes]:
    from cleanpairs.encoders.cache import content_digest

    return [content_digest(f"item {i}") for i in range(start, stop)]


def build(folder: Path, n_keys: int) -> None:
    from cleanpairs.encoders.cache import EmbeddingCache

    cache = EmbeddingCache(folder, "bench", "texts")
    if cache.folder.is_dir() and len(list(cache.folder.glob("*.keys.npy"))) == -(-n_keys // PART_ROWS):
        return
    for start in range(0, n_keys, PART_ROWS):
        stop = min(start + PART_ROWS, n_keys)
        rows = np.arange(start, stop, dtype=np.float32)[:, None] * np.ones(DIM, np.float32)
        cache.store(_digests(start, stop), rows)


class DictIndex:
    """The index before sorted parts: one dict entry per key, every part memory-mapped per lookup."""

    def __init__(self, folder: Path) -> None:
        self.index: dict[bytes, tuple[int, int]] = {}
        self.parts: list[Path] = []
        for keys_file in sorted(folder.glob("part-*.keys.npy")):
            part = len(self.parts)
            self.parts.append(keys_file.with_name(keys_file.name.replace(".keys.npy", ".emb.npy")))
            keys = np.load(keys_file)
            for row in range(len(keys)):
                self.index[keys[row].tobytes()] = (part, row)

    def lookup(self, digests: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        found = np.array([d in self.index for d in digests], dtype=bool)
        hits = [self.index[d] for d, f in zip(digests, found, strict=True) if f]
        matrices = [np.load(p, mmap_mode="r") for p in self.parts]
        out = np.empty((len(hits), matrices[hits[0][0]].shape[1]), dtype=np.float32)
        by_part: dict[int, list[tuple[int, int]]] = {}
        for pos, (part, row) in enumerate(hits):
            by_part.setdefault(part, []).append((pos, row))
        for part, items in by_part.items():
            out[np.array([p for p, _ in items])] = matrices[part][np.array([r for _, r in items])]
        return found, out


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _vm_hwm_mib() -> float:
    return _status_mib("VmHWM")


def measure(folder: Path, n_keys: int, kind: str) -> dict:
    """One size, one index kind, in this process: time of two lookups and peak memory."""
    from cleanpairs.encoders.cache import EmbeddingCache

    rng = np.random.default_rng(0)
    present = rng.choice(n_keys, ASKED // 2, replace=False)
    asked = [d for i in present for d in _digests(int(i), int(i) + 1)]
    asked += _digests(n_keys, n_keys + ASKED // 2)
    cache = EmbeddingCache(folder, "bench", "texts")
    if kind == "index, first open":
        for stale in cache.folder.glob("index-*"):
            stale.unlink()
    before = _vm_hwm_mib()
    t0 = time.perf_counter()
    index = DictIndex(cache.folder) if kind == "dict" else cache
    found, rows = index.lookup(asked)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    index.lookup(asked)
    second = time.perf_counter() - t0
    assert found.sum() == len(present) and np.array_equal(rows[:, 0], present.astype(np.float32))
    return {
        "keys": n_keys,
        "index": kind,
        "first_lookup_s": round(first, 3),
        "second_lookup_s": round(second, 3),
        "peak_rss_mib": round(_vm_hwm_mib(), 1),
        "peak_rss_over_start_mib": round(_vm_hwm_mib() - before, 1),
        # Anonymous memory after the lookups: the rest of the resident set is pages of the
        # memory-mapped index and parts, which the kernel drops when memory runs short.
        "rss_anon_after_mib": round(_status_mib("RssAnon"), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--folder", type=Path, default=Path("/tmp/cleanpairs-cache-index"))
    parser.add_argument("--one", nargs=2, metavar=("KEYS", "INDEX"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        n_keys, kind = int(args.one[0]), args.one[1]
        print(json.dumps(measure(args.folder / str(n_keys), n_keys, kind)))
        return
    rows = []
    for n_keys in (int(s) for s in args.sizes.split(",")):
        build(args.folder / str(n_keys), n_keys)
        for kind in ("index, first open", "index", "dict"):
            cmd = [sys.executable, __file__, "--folder", str(args.folder), "--one", str(n_keys), kind]
            rows.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))
            print(json.dumps(rows[-1]), flush=True)
    print("| keys | index | first lookup (s) | second lookup (s) | peak RSS (MiB) | over start (MiB) "
          "| anonymous after (MiB) |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['keys']:,} | {r['index']} | {r['first_lookup_s']} | {r['second_lookup_s']} "
            f"| {r['peak_rss_mib']} | {r['peak_rss_over_start_mib']} | {r['rss_anon_after_mib']} |"
        )


if __name__ == "__main__":
    main()
