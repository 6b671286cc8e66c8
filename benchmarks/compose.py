"""Assemble docs/benchmarks.md from what `make bench` wrote: the foundation and rematch-scale
benchmarks' JSON (docs/benchmarks.json), the report of `cleanpairs bench` (docs/bench/report.md,
with its plots), the training-stability benchmark (docs/bench/stability.md), the scale benchmark
(docs/bench/scale.md and, for the default method, scale_default.md), the fit-on-a-sample
benchmark (docs/bench/fit_sample.md; fit_sample_unaligned.md with `align=none`), the CPU-threads
benchmark (docs/bench/threads.md) and the candidate offline encoders (docs/bench/encoders.md,
`benchmarks/encoders.py`).

    python benchmarks/compose.py
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import foundation
import rematch

DOCS = foundation.ROOT / "docs"
BENCH = DOCS / "bench"


SCALE = """## Scale: `score` on a folder of shards (`benchmarks/scale.py`)

Synthetic corpora in 100k-row parquet shards: 128-d float16 precomputed embeddings, 5 captions per
image, each caption a noisy linear map of its image, 40% of captions shuffled; the method is fit
on a 200,000-pair sample (`--fit-pairs` default; with `align=auto`, the default, after a pass
that sums the cross-moments of every shard, and in the corpus alignment's space, for the noise
here is caption by caption) and every shard is scored with the fitted scorer.
Score wall and peak RSS: the whole `cleanpairs score SHARDS/ -o OUT/ --encoder precomputed`
command. Scoring pass: `cleanpairs apply` of the run's scorer over the same shards, against
`benchmarks/bare_pass.py`, the same alignment, heads, statistics and fitted splits applied in bare numpy to
the same shards, writing the same columns (no checks, statuses, fingerprints, metadata or
markers; its `cp_p_clean` agrees with ours to 0.004); both timed as whole programs, interpreter
start and imports included. The ratio is the bare pass's time over ours (our throughput as a
share of bare numpy's). The second table: the run
killed with SIGKILL after about half of its shards and started again (the sum of both), and the
same run on the ray engine (a local 2-CPU Ray started by the run), against the uninterrupted local
run; "same output" compares every shard's `cp_*` columns byte for byte.
"""

SCALE_DEFAULT = """### The default method at scale

The same corpora and command for `robust`, the method `score` uses when none is named (it fits
`ncr` and `crcl` side by side): score wall and peak RSS only, as `benchmarks/bare_pass.py` has
no bare counterpart of it.
"""

REMATCH_SHARDS = """### Rematch across shards (`benchmarks/rematch_shards.py`)

`score SHARDS/ -o OUT/ --rematch` (similarity, precomputed embeddings) on one corpus of 50,000
pairs cut into 1, 10 and 100 shards: the rematch step's wall time and the peak RSS of the run;
memory does not grow with the number of shards.
"""

CACHE_INDEX = """### Embedding cache index (`benchmarks/cache_index.py`)

Looking up 10,000 keys (half of them cached) in a synthetic cache of 10^6 and 10^7 keys, each in
a fresh process: the on-disk sorted index when first built, when already on disk, and the
per-key Python dict earlier versions held.
"""

FIT_SAMPLE = """### Fit on a sample (`benchmarks/fit_sample.py`)

Detection quality when the method is fit on a sample: Flickr8k train with 40% of captions
shuffled (seed 0) in three 10,000-pair parquet shards, `score` on the folder with the default
`--fit-pairs` (the whole corpus is smaller, so it is fit whole) and with `--fit-pairs 10000`
(fit on a third, every other pair scored by the fitted scorer). AUROC over all 30,000 pairs;
the target: a sample fit within 0.005 of the fit on all. With `align=auto`, the default, the
10,000-pair fits train in the corpus alignment's space, fit on the cross-moments of all 30,000
pairs (docs/methods.md, "Corpus alignment"); the fits on all are not aligned. The training
length is the one the
sample fit chose on its held-out pairs (docs/methods.md, "Fit on a sample, score the corpus",
which also says why the gap is the quantity of data the heads learn from).
"""

FIT_SAMPLE_UNALIGNED = """#### The same with `--param align=none`

The same runs with the heads learning from the sample alone, as every sample fit did before
`align=auto` became the default (docs/methods.md, "Fit on a sample, score the corpus").
"""

THREADS = """## CPU threads (`benchmarks/threads.py`)

Fit time of each method on Flickr8k train (30,000 pairs, 40% shuffled, cached embeddings), each
fit in a fresh process, on an idle machine and beside one busy process (a pure-Python loop).
cleanpairs fits and scores on one torch thread (`cleanpairs.device.FIT_THREADS`,
`SCORE_THREADS`; `PairScorer(threads=N)` overrides): the heads are small, so on two idle cores a
second thread saves about a third of the fit (the forced rows), but as soon as another process
takes a core every step waits for the thread that lost it, and the fit takes several times as
long. One thread costs that third when the machine is idle and holds its time when it is not.
Encoding keeps torch's default threads (large convolutions, each step long enough to share).
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--note", default="", help="a paragraph on the conditions of this run")
    args = parser.parse_args()
    data = json.loads((DOCS / "benchmarks.json").read_text())
    parts = [foundation.render(data["throughput"], data["similarity"], data["filter"])]
    if args.note:
        parts.append(args.note)
    report = BENCH / "report.md"
    if report.exists():
        parts.append(report.read_text())
        plots = sorted(BENCH.glob("*.png"))
        if plots:
            parts.append("### Plots\n\n" + "\n".join(f"![{p.stem}](bench/{p.name})" for p in plots) + "\n")
    stability = BENCH / "stability.md"
    if stability.exists():
        parts.append(stability.read_text())
    if "rematch_scale" in data:
        parts.append(rematch.render(data["rematch_scale"]))
    sections = (
        ("scale.md", SCALE),
        ("scale_default.md", SCALE_DEFAULT),
        ("fit_sample.md", FIT_SAMPLE),
        ("fit_sample_unaligned.md", FIT_SAMPLE_UNALIGNED),
        ("rematch_shards.md", REMATCH_SHARDS),
        ("cache_index.md", CACHE_INDEX),
        ("threads.md", THREADS),
    )
    for name, heading in sections:
        if (BENCH / name).exists():
            parts.append(heading + "\n" + (BENCH / name).read_text())
    encoders = BENCH / "encoders.md"
    if encoders.exists():
        parts.append(encoders.read_text())
    page = DOCS / "benchmarks.md"
    page.write_text("\n".join(part.rstrip() + "\n" for part in parts))
    print(f"wrote {page}")


if __name__ == "__main__":
    main()
