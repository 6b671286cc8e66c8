"""Fits on disjoint samples, averaged (docs/methods.md, "Fit on a sample, score the corpus"): an
experiment, not a library path. Flickr8k train with 40% of captions shuffled (seed 0), as in
`fit_sample.py`, cut at random into disjoint samples of `--size` pairs; the method is fit on
each in turn (training seed `--seed` + j), every fit scores all 30,000 pairs through
`score_pairs`, and the fits are combined by the mean of their posteriors and by the mean of
their posteriors' ranks. `--same-sample` fits every one on the first sample instead, to tell
what the other samples' pairs add from what averaging fits alone adds. One JSON line per fit
added, AUROC over all 30,000 pairs.

    python benchmarks/fit_bag.py --cache-dir /work/.flk-cache --method ncr --fits 3 --size 10000
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from fit_size import auroc, embedded
from scipy.stats import rankdata

from cleanpairs.methods import get_method


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--method", default="similarity")
    parser.add_argument("--fits", type=int, default=3)
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--params", default="{}", help="the method's parameters, as JSON")
    parser.add_argument("--same-sample", action="store_true", help="fit every one on the first sample")
    parser.add_argument("--overlap", action="store_true", help="draw each sample anew (they overlap)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        train, clean = embedded("train", 0, args.cache_dir, Path(tmp))
    order = np.random.default_rng(args.seed).permutation(len(train))
    posteriors, ranks = [], []
    for j in range(args.fits):
        start = 0 if args.same_sample else j * args.size
        rows = np.sort(order[start : start + args.size])
        if args.overlap:
            # A stream of its own: shuffle_captions draws the noisy rows from the seed's first one.
            draw = np.random.default_rng([args.seed, 1000, j])
            rows = np.sort(draw.choice(len(train), args.size, replace=False))
        method = get_method(args.method)(seed=args.seed + j, device="cpu", **json.loads(args.params))
        p_clean = method.fit(train.take(rows)).score_pairs(train).p_clean
        posteriors.append(p_clean)
        ranks.append(rankdata(p_clean))
        record = {
            "method": args.method,
            "fits": j + 1,
            "this_fit": auroc(p_clean, clean),
            "mean_posterior": auroc(np.mean(posteriors, axis=0), clean),
            "mean_rank": auroc(np.mean(ranks, axis=0), clean),
        }
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
