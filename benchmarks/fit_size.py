"""Where a whole-corpus fit's detection quality comes from (docs/methods.md, "Fit on a sample,
score the corpus"): Flickr8k train with 40% of captions shuffled (seed 0), as in
`fit_sample.py`. H is 5,000 train pairs drawn at random; the method is fit on all 30,000 pairs
(H among them) and on N pairs drawn outside H, and each fit scores H through `score_pairs`, and
Flickr8k dev (photos no fit saw, 40% shuffled with seed 1). One JSON line per (method, N).

    python benchmarks/fit_size.py --cache-dir /work/.flk-cache --methods similarity,ncr \\
        --sizes 30000,25000,20000,10000
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from fit_sample import noisy_table

from cleanpairs.encoders import embed_corpus
from cleanpairs.io.tables import read_pairs
from cleanpairs.methods import get_method
from cleanpairs.metrics import detection_metrics

HELD_OUT = 5_000


def embedded(split: str, seed: int, cache_dir: str | None, folder: Path) -> tuple:
    """The split's pairs with 40% of captions shuffled (``seed``), embedded, and their truth."""
    table = noisy_table(split, 0.4, seed)
    pq.write_table(table, folder / f"{split}.parquet")
    corpus = embed_corpus(read_pairs(folder / f"{split}.parquet"), "offline", cache_dir=cache_dir,
                          device="cpu", progress=False)  # fmt: skip
    return corpus.pairs, table.column("is_clean").to_numpy()


def auroc(p_clean: np.ndarray, is_clean: np.ndarray) -> float:
    return round(float(detection_metrics(p_clean, is_clean)["auroc"]), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--methods", default="similarity,ncr")
    parser.add_argument("--sizes", default="30000,25000,20000,10000")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        train, clean = embedded("train", 0, args.cache_dir, Path(tmp))
        dev, dev_clean = embedded("dev", 1, args.cache_dir, Path(tmp))
    held = np.sort(np.random.default_rng(7).choice(len(train), HELD_OUT, replace=False))
    outside = np.setdiff1d(np.arange(len(train)), held)
    for method in args.methods.split(","):
        for size in (int(n) for n in args.sizes.split(",")):
            if size >= len(train):
                rows = np.arange(len(train))
            else:
                rows = np.sort(np.random.default_rng([7, size]).choice(outside, size, replace=False))
            scorer = get_method(method)(seed=0, device="cpu").fit(train.take(rows))
            own = scorer.score().p_clean
            record = {"method": method, "fit_pairs": len(rows), "own": auroc(own, clean[rows])}
            if len(rows) == len(train):
                record["held_out_own_scores"] = auroc(own[held], clean[held])
            record["held_out"] = auroc(scorer.score_pairs(train.take(held)).p_clean, clean[held])
            record["dev"] = auroc(scorer.score_pairs(dev).p_clean, dev_clean)
            print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
