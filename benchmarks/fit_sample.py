"""Fit on a sample vs fit on all (docs/methods.md, "Fit on a sample, score the corpus"): Flickr8k
train with 40% of captions shuffled (seed 0) in three 10,000-pair parquet shards, scored into a
folder with `score_shards` at each `--fit-pairs`; detection AUROC and estimated noise rate over
all 30,000 pairs, one JSON line per (method, fit pairs). With `--table`, also a markdown table
of each method's sample fits against its fit on all pairs (the first `--fit-pairs`), for
docs/benchmarks.md (`make bench`). `--params` gives every method the same parameters (JSON):
`make bench` runs it again with `'{"align": "auto"}'` (docs/methods.md, "Corpus alignment").

    python benchmarks/fit_sample.py --out /tmp/fit-sample --cache-dir /work/.flk-cache \\
        --methods similarity,ncr,rcar --fit-pairs 1000000,10000
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cleanpairs.metrics import detection_metrics
from cleanpairs.noise import shuffle_captions
from cleanpairs.sharded import score_shards

FLICKR = Path(__file__).resolve().parents[2] / "shared" / "data" / "flickr8k"


def noisy_table(
    split: str, rate: float, seed: int, *, images: int | None = None, source: bool = False
) -> pa.Table:
    """A Flickr8k split (its first ``images`` photos, or all) with ``rate`` of its captions
    shuffled (``seed``), truth in ``is_clean`` (and, with ``source``, the photo each caption was
    written for in ``caption_image_id``)."""
    table = pq.read_table(FLICKR / f"{split}.parquet")
    if images is not None:
        ids = np.array(table.column("image_id").to_pylist())
        table = table.filter(pa.array(np.isin(ids, list(dict.fromkeys(ids))[:images])))
    paths = [str(FLICKR / p) for p in table.column("image").to_pylist()]
    table = table.set_column(table.schema.get_field_index("image"), "image", pa.array(paths))
    ids = np.array(table.column("image_id").to_pylist())
    noise = shuffle_captions(ids, rate, seed=seed)
    captions = np.array(table.column("caption").to_pylist(), dtype=object)[noise.caption_source]
    table = table.set_column(table.schema.get_field_index("caption"), "caption", pa.array(captions.tolist()))
    table = table.append_column("is_clean", pa.array(noise.is_clean))
    if source:
        table = table.append_column("caption_image_id", pa.array(ids[noise.caption_source].tolist()))
    return table


def write_shards(folder: Path, shards: int = 3, rate: float = 0.4) -> Path:
    """Flickr8k train, ``rate`` of captions shuffled, truth in ``is_clean``, cut into ``shards``."""
    table = noisy_table("train", rate, seed=0)
    folder.mkdir(parents=True, exist_ok=True)
    size = -(-table.num_rows // shards)
    for i in range(shards):
        pq.write_table(table.slice(i * size, size), folder / f"{i:05d}.parquet")
    return folder


def measure(
    shards: Path,
    out: Path,
    method: str,
    fit_pairs: int,
    cache_dir: str | None,
    params: dict | None = None,
    seed: int = 0,
) -> dict:
    shutil.rmtree(out, ignore_errors=True)  # a new measurement, not a resumed run
    start = time.perf_counter()
    run = score_shards(shards, out, method=method, fit_pairs=fit_pairs, device="cpu", params=params,
                       seed=seed, cache_dir=cache_dir, progress=False)  # fmt: skip
    table = pa.concat_tables(pq.read_table(p) for p in sorted(out.glob("0*.parquet")))
    p_clean = table.column("cp_p_clean").to_numpy()
    detection = detection_metrics(p_clean, table.column("is_clean").to_numpy())
    record = json.loads((out / "_cleanpairs_run.json").read_text())
    return {
        "method": method,
        "fit_pairs": run.fit_pairs,
        "calibration_pairs": record.get("calibration_pairs", 0),
        "fit_epochs": record.get("fit_epochs"),
        "auroc": round(float(detection["auroc"]), 4),
        "estimated_noise": round(float(np.mean(1 - p_clean)), 3),
        "seconds": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--methods", default="similarity,ncr,rcar")
    parser.add_argument("--fit-pairs", default="1000000,10000")
    parser.add_argument("--table", type=Path, default=None, help="write the markdown table here")
    parser.add_argument("--params", default="{}", help="every method's parameters, as JSON")
    parser.add_argument("--seed", type=int, default=0, help="the run's seed (fit sample, training)")
    args = parser.parse_args()
    shards = write_shards(args.out / "in")
    records = []
    for method in args.methods.split(","):
        for fit_pairs in (int(n) for n in args.fit_pairs.split(",")):
            out = args.out / f"{method}-{fit_pairs}"
            params = json.loads(args.params)
            records.append(measure(shards, out, method, fit_pairs, args.cache_dir, params, args.seed))
            print(json.dumps(records[-1]), flush=True)
    if args.table is not None:
        args.table.write_text(render(records))


def render(records: list[dict]) -> str:
    """Each method's sample fits against its first record (the fit on all pairs)."""
    lines = [
        "| method | fit pairs | training length | AUROC | est. noise (true 40%) | vs fit on all | target |",
        "| --- | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    whole: dict[str, float] = {}
    for r in records:
        first = r["method"] not in whole
        whole.setdefault(r["method"], r["auroc"])
        gap = r["auroc"] - whole[r["method"]]
        length = "as set" if r["fit_epochs"] is None else f"{r['fit_epochs']} chosen"
        length = "whole corpus" if first else length
        lines.append(
            f"| {r['method']} | {r['fit_pairs']:,} | {length} | {r['auroc']:.4f} "
            f"| {100 * r['estimated_noise']:.1f}% | {'' if first else f'{gap:+.4f}'} "
            f"| {'' if first else ('met' if gap >= -0.005 else 'not met')} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
