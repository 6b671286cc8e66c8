"""Sample fits of small corpora with and without the corpus alignment, and what they rematch
(docs/methods.md, "Corpus alignment", "Small corpora and rematching"): the pairs of the first N
photos of Flickr8k train, 40% of the captions shuffled (seed 0), cut into four parquet shards,
`score_shards(..., fit_pairs=F, rematch=True)` with `align=none` and `align=auto`. One JSON line
per run: AUROC of `cp_p_clean`, pairs flagged, pairs rematched and the share of the rematched
whose proposed caption was written for their image.

    python benchmarks/align_small.py --cache-dir /work/.flk-cache --method ncr \\
        --cases 60:200,100:250,200:333,600:1000,1200:2000
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fit_sample import noisy_table
from fit_size import auroc

from cleanpairs.sharded import RUN_FILE, score_shards

SHARDS = 4


def run(n_images: int, fit_pairs: int, method: str, align: str, cache_dir: str | None) -> dict:
    table = noisy_table("train", 0.4, seed=0, images=n_images, source=True)
    is_clean = np.array(table.column("is_clean").to_pylist())
    written_for = np.array(table.column("caption_image_id").to_pylist())
    key_row = {k: i for i, k in enumerate(table.column("key").to_pylist())}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        # Cut a few rows past even quarters, so that shards cut through images.
        cuts = [0, *(np.linspace(0, table.num_rows, SHARDS + 1).astype(int)[1:-1] + 3), table.num_rows]
        for s, (lo, hi) in enumerate(itertools.pairwise(cuts)):
            pq.write_table(table.slice(lo, hi - lo), folder / f"{s:05d}.parquet")
        done = score_shards(folder, Path(tmp) / "out", method=method, params={"align": align},
                            fit_pairs=fit_pairs, rematch=True, cache_dir=cache_dir, device="cpu",
                            progress=False)  # fmt: skip
        decision = json.loads((Path(tmp) / "out" / RUN_FILE).read_text()).get("fit_info", {}).get("align", {})
        out = pa.concat_tables([pq.read_table(Path(tmp) / "out" / f"{s:05d}.parquet") for s in range(SHARDS)])
    p_clean = np.array(out.column("cp_p_clean").to_pylist(), dtype=float)
    images = np.array(out.column("image_id").to_pylist())
    partners = out.column("cp_rematch_key").to_pylist()
    right = [written_for[key_row[partner]] == image
             for partner, image in zip(partners, images, strict=True) if partner is not None]  # fmt: skip
    return {"pairs": table.num_rows, "fit_pairs": fit_pairs, "method": method, "align": align,
            "aligned": decision.get("aligned", False),
            "auroc": auroc(p_clean, is_clean), "flagged": int((p_clean < 0.5).sum()),
            "rematched": int(done.rematch["rematched"]),
            "right": round(float(np.mean(right)), 3) if right else None}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--method", default="ncr")
    parser.add_argument("--cases", default="60:200,100:250,200:333,600:1000,1200:2000",
                        help="photos:fit pairs, comma-separated (5 captions a photo)")  # fmt: skip
    args = parser.parse_args()
    for case in args.cases.split(","):
        n_images, fit_pairs = map(int, case.split(":"))
        for align in ("none", "auto"):
            print(json.dumps(run(n_images, fit_pairs, args.method, align, args.cache_dir)), flush=True)


if __name__ == "__main__":
    main()
