"""Sample fits with and without the corpus alignment across noise kinds (docs/methods.md, "Corpus
alignment"): Flickr8k train embedded once, noise injected in embedding space as `cleanpairs
bench` does (seed 0); each method fit on 10,000 pairs drawn at random (seed 5) at its full
length without calibration, with `align=none` and `align=cca` (the moments of all 30,000 pairs
given), every pair scored by `score_pairs`; AUROC over all 30,000. Per case also the shared
space's plain cosine and its image share (`robust`'s ICC), which need no truth. One JSON line
per (case, method, align).

    python benchmarks/align_sample.py --cache-dir /work/.flk-cache \\
        --noise shuffle:0.2,shuffle:0.6,complete:0.4,hard:0.2 --methods similarity,ncr,rcar,robust
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fit_sample import FLICKR
from fit_size import auroc

from cleanpairs.bench import NoiseCase, inject
from cleanpairs.core.agreement import image_share
from cleanpairs.core.alignment import CorpusAlignment, CrossMoments
from cleanpairs.encoders import embed_corpus
from cleanpairs.io.tables import read_pairs
from cleanpairs.methods import get_method

SAMPLE = 10_000


def clean_train(cache_dir: str | None) -> object:
    """Flickr8k train's pairs, embedded with the offline encoder."""
    table = pq.read_table(FLICKR / "train.parquet")
    paths = [str(FLICKR / p) for p in table.column("image").to_pylist()]
    table = table.set_column(table.schema.get_field_index("image"), "image", pa.array(paths))
    with tempfile.TemporaryDirectory() as tmp:
        pq.write_table(table, Path(tmp) / "train.parquet")
        corpus = read_pairs(Path(tmp) / "train.parquet")
        return embed_corpus(corpus, "offline", cache_dir=cache_dir, device="cpu", progress=False).pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--noise", default="shuffle:0.2,shuffle:0.6,shuffle:0.8,complete:0.4,hard:0.2")
    parser.add_argument("--methods", default="similarity,ncr,rcar,robust")
    args = parser.parse_args()
    clean = clean_train(args.cache_dir)
    sample = np.sort(np.random.default_rng([5, 5]).permutation(len(clean))[:SAMPLE])
    for spec in args.noise.split(","):
        kind, rate = spec.split(":")
        noisy, noise = inject(clean, NoiseCase(kind, float(rate), 0))
        moments = CrossMoments.of_pairs(noisy)
        shared = CorpusAlignment.fit(moments).apply(noisy)
        cosine = np.einsum("ij,ij->i", shared.pair_images(), shared.texts)
        case = {"noise": spec}
        share = round(image_share(cosine, noisy.image_index), 3)
        print(json.dumps({**case, "shared_cosine": auroc(cosine, noise.is_clean), "image_share": share}))
        for method in args.methods.split(","):
            for align in ("none", "cca"):
                scorer = get_method(method)(seed=0, device="cpu", align=align)
                scorer.fit(noisy.take(sample), moments=moments)
                found = auroc(scorer.score_pairs(noisy).p_clean, noise.is_clean)
                print(json.dumps({**case, "method": method, "align": align, "auroc": found}), flush=True)


if __name__ == "__main__":
    main()
