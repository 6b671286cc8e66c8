"""Foundation benchmarks: encoder throughput, the `similarity` baseline on Flickr8k with
injected noise, and `filter` on 1M / 10M-row scores files. Writes docs/benchmarks.md.

Run with `make bench`. Reads ../shared/data/flickr8k; the embedding cache (default
~/.cache/cleanpairs) makes every run after the first skip the ~10 minutes of encoding.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cleanpairs.encoders.cache import EmbeddingCache, content_digest
from cleanpairs.encoders.embed import IMAGE_BATCH, encode_images_cached, encode_texts_cached
from cleanpairs.encoders.offline import OfflineEncoder
from cleanpairs.io.images import decode_image, read_image_bytes
from cleanpairs.io.scores import ROW_GROUP_ROWS, with_run_metadata
from cleanpairs.metrics import detection_metrics
from cleanpairs.noise import shuffle_captions
from cleanpairs.pipeline import score_corpus
from cleanpairs.schema import P_CLEAN, STATUS, RunMetadata, output_fields

ROOT = Path(__file__).resolve().parents[1]
FLICKR = ROOT.parent / "shared" / "data" / "flickr8k"
TEXT_BATCH = 128


def flickr(split: str) -> pa.Table:
    table = pq.read_table(FLICKR / f"{split}.parquet")
    paths = [str(FLICKR / p) for p in table.column("image").to_pylist()]
    return table.set_column(table.schema.get_field_index("image"), "image", pa.array(paths))


def encoder_throughput(n_images: int = 256, n_texts: int = 4096, repeats: int = 2) -> dict:
    """Encoding through cleanpairs (read, hash, decode, preprocess, encode, cache) beside the
    bare model forward on already-preprocessed inputs, at the same batch size."""
    enc = OfflineEncoder(device="cpu", text_batch_size=TEXT_BATCH)
    dev = flickr("dev")
    paths = list(dict.fromkeys(dev.column("image").to_pylist()))[:n_images]
    captions = list(dict.fromkeys(dev.column("caption").to_pylist()))[:n_texts]
    enc.encode_images([decode_image(read_image_bytes(paths[0]))] * 2)  # load and warm up
    enc.encode_texts(captions[:TEXT_BATCH])

    pixels = np.stack([enc.preprocess(decode_image(read_image_bytes(p))) for p in paths])
    digests = [content_digest(read_image_bytes(p)) for p in paths]
    by_digest = dict(zip(digests, paths, strict=True))

    def bare_images() -> None:
        for i in range(0, len(pixels), IMAGE_BATCH):
            enc.encode_pixels(pixels[i : i + IMAGE_BATCH])

    def ours_images() -> None:
        with tempfile.TemporaryDirectory() as cache:
            encode_images_cached(
                enc,
                EmbeddingCache(cache, "bench", "images"),
                digests,
                lambda d: read_image_bytes(by_digest[d]),
                progress=False,
            )

    def bare_texts() -> None:
        for i in range(0, len(captions), TEXT_BATCH):
            enc.encode_texts(captions[i : i + TEXT_BATCH])

    def ours_texts() -> None:
        with tempfile.TemporaryDirectory() as cache:
            encode_texts_cached(
                enc, EmbeddingCache(cache, "bench", "texts"), captions, batch_size=TEXT_BATCH, progress=False
            )

    # Alternate the two and keep each one's best of `repeats`, so that a slow moment of the
    # machine does not land on one side only.
    best = {fn: float("inf") for fn in (bare_images, ours_images, bare_texts, ours_texts)}
    for _ in range(repeats):
        for fn in best:
            tick = time.perf_counter()
            fn()
            best[fn] = min(best[fn], time.perf_counter() - tick)
    ours_images_rate, bare_images_rate = len(paths) / best[ours_images], len(paths) / best[bare_images]
    ours_texts_rate, bare_texts_rate = len(captions) / best[ours_texts], len(captions) / best[bare_texts]
    return {
        "images": (ours_images_rate, bare_images_rate),
        "texts": (ours_texts_rate, bare_texts_rate),
        "n_images": len(paths),
        "n_texts": len(captions),
    }


def similarity_on_flickr(rates: list[float], work: Path, seed: int = 0) -> list[dict]:
    """`score` on all of Flickr8k train with a share of captions shuffled, warm cache."""
    train = flickr("train")
    ids = np.array(train.column("image_id").to_pylist())
    captions = np.array(train.column("caption").to_pylist(), dtype=object)
    rows = []
    # The first pass fills the embedding cache if it is cold; its time is not reported.
    score_corpus(
        _noisy(train, captions, ids, rates[0], seed, work),
        work / "warm.parquet",
        method="similarity",
        seed=seed,
        progress=False,
    )
    for rate in rates:
        source = _noisy(train, captions, ids, rate, seed, work)
        tick = time.perf_counter()
        run = score_corpus(
            source, work / f"scores-{rate}.parquet", method="similarity", seed=seed, progress=False
        )
        wall = time.perf_counter() - tick
        out = pq.read_table(run.output, columns=[P_CLEAN, "is_clean"])
        metrics = detection_metrics(out.column(P_CLEAN).to_numpy(), out.column("is_clean").to_numpy())
        rows.append({"rate": rate, "wall_s": wall, "fit_s": run.meta.timings["fit_s"], **metrics})
    return rows


def _noisy(
    train: pa.Table, captions: np.ndarray, ids: np.ndarray, rate: float, seed: int, work: Path
) -> Path:
    noise = shuffle_captions(ids, rate, seed=seed)
    table = train.set_column(
        train.schema.get_field_index("caption"), "caption", pa.array(captions[noise.caption_source].tolist())
    )
    path = work / f"train-noise-{rate}.parquet"
    table = table.append_column("is_clean", pa.array(noise.is_clean))
    # The photo each caption was written for: the truth behind rematch accuracy.
    table = table.append_column("caption_image_id", pa.array(ids[noise.caption_source].tolist()))
    pq.write_table(table, path)
    return path


def make_scores_file(path: Path, rows: int, chunk: int = 1_000_000) -> None:
    """A synthetic scores file shaped like ours (keys, image paths, captions, cp_* columns)."""
    rng = np.random.default_rng(0)
    captions = pq.read_table(FLICKR / "dev.parquet", columns=["caption"]).column("caption")
    meta = RunMetadata(
        version="bench",
        method="similarity",
        params={},
        encoder="offline",
        seed=0,
        input=["synthetic"],
        input_fingerprint="-",
        roles={"key": "key"},
        rows=rows,
        scored_rows=rows,
        estimated_noise_rate=0.3,
    )
    schema = pa.schema(
        [("key", pa.string()), ("image", pa.string()), ("caption", pa.string()), *output_fields(pa.string())]
    )
    with pq.ParquetWriter(path, with_run_metadata(schema, meta)) as writer:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            p_clean = pa.array(rng.random(n, dtype=np.float32))
            writer.write_table(
                pa.table(
                    {
                        "key": pa.array([f"{i:010d}" for i in range(start, start + n)]),
                        "image": pa.array([f"images/{i:010d}.jpg" for i in range(start, start + n)]),
                        "caption": captions.take(pa.array(rng.integers(0, len(captions), n))),
                        P_CLEAN: p_clean,
                        "cp_soft_label": p_clean,
                        "cp_similarity": pa.array(rng.random(n, dtype=np.float32)),
                        "cp_rematch_key": pa.nulls(n, pa.string()),
                        "cp_rematch_score": pa.nulls(n, pa.float32()),
                        STATUS: pa.array(np.full(n, "ok", dtype=object), pa.string()),
                    },
                    schema=writer.schema,
                ),
                row_group_size=ROW_GROUP_ROWS,
            )


FILTER_CODE = {
    "cleanpairs": "from cleanpairs.io.scores import filter_scores\nfilter_scores(src, out, thresh=0.5)",
    "bare pyarrow": "import pyarrow.parquet as pq, pyarrow.compute as pc\n"
    "t = pq.read_table(src)\n"
    "pq.write_table(t.filter(pc.greater_equal(t['cp_p_clean'], 0.5)), out)",
}


def time_filter(kind: str, src: Path, out: Path) -> tuple[float, float]:
    """Seconds and peak RSS (MiB) of one filter, measured in a fresh process."""
    code = (
        "import time, json\n"
        f"src, out = {str(src)!r}, {str(out)!r}\n"
        "tick = time.perf_counter()\n"
        f"{FILTER_CODE[kind]}\n"
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forked parent.
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
        "print(json.dumps([time.perf_counter() - tick, int(hwm) / 1024]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seconds, peak = json.loads(done.stdout.strip().splitlines()[-1])
    return seconds, peak


def filter_throughput(sizes: list[int], work: Path) -> list[dict]:
    rows = []
    for size in sizes:
        src = work / f"scores-{size}.parquet"
        make_scores_file(src, size)
        for kind in ("bare pyarrow", "cleanpairs"):
            seconds, peak = time_filter(kind, src, work / f"kept-{kind[:4]}-{size}.parquet")
            rows.append(
                {
                    "rows": size,
                    "kind": kind,
                    "seconds": seconds,
                    "rows_per_s": size / seconds,
                    "peak_mib": peak,
                    "file_mib": src.stat().st_size / 2**20,
                }
            )
        src.unlink()
    return rows


def render(throughput: dict, detection: list[dict], filters: list[dict]) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`benchmarks/foundation.py`); every number below comes from the",
        f"last run, on {platform.machine()} with {os.cpu_count()} cores, no GPU.",
        "",
        "## Offline encoder throughput",
        "",
        f"{throughput['n_images']} Flickr8k dev photos and {throughput['n_texts']} captions. `cleanpairs` is",
        "the whole path (read file, hash, decode, preprocess in a worker thread, encode, write the",
        "cache); `bare` is the model forward alone on already-preprocessed inputs, same batch size",
        f"({IMAGE_BATCH} images, {TEXT_BATCH} captions); best of two alternating runs each.",
        "",
        "| what | cleanpairs /s | bare forward /s | ratio | target |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for kind in ("images", "texts"):
        ours, bare = throughput[kind]
        lines.append(f"| {kind} | {ours:.1f} | {bare:.1f} | {ours / bare:.0%} | >= 90% |")
    lines += [
        "",
        "## `similarity` on Flickr8k train (30,000 pairs), offline encoder",
        "",
        "Captions shuffled among a share of the pairs (`cleanpairs.noise.shuffle_captions`, seed 0).",
        "Detection treats noisy pairs as positives, ranked by `1 - cp_p_clean`. Wall time is the",
        "whole `score` (read, cache lookups, head training, mixture, write) with a warm cache.",
        "",
        "| noise | AUROC | AP | F1 @ 0.5 | est. noise | true noise | fit s | score wall s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in detection:
        lines.append(
            f"| {r['rate']:.0%} | {r['auroc']:.3f} | {r['ap']:.3f} | {r['f1']:.3f} | "
            f"{r['estimated_noise_rate']:.1%} | {r['true_noise_rate']:.1%} | {r['fit_s']:.1f} | "
            f"{r['wall_s']:.1f} |"
        )
    lines += [
        "",
        "## `filter` on large scores files",
        "",
        "Synthetic scores files (keys, image paths, Flickr captions, the `cp_*` columns), each",
        "filter in a fresh process; peak is the process's maximum resident memory, including the",
        "interpreter and imports. `bare pyarrow` reads the whole table, filters, writes.",
        "",
        "| rows | file MiB | kind | seconds | rows/s | peak MiB | vs bare |",
        "| ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    bare_rate = {r["rows"]: r["rows_per_s"] for r in filters if r["kind"] == "bare pyarrow"}
    for r in filters:
        lines.append(
            f"| {r['rows']:,} | {r['file_mib']:.0f} | {r['kind']} | {r['seconds']:.2f} | "
            f"{r['rows_per_s'] / 1e6:.2f}M | {r['peak_mib']:.0f} | "
            f"{r['rows_per_s'] / bare_rate[r['rows']]:.0%} |"
        )
    lines += ["", "Targets: at least 80% of the bare rate; peak memory flat as the file grows.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--rates", default="0.2,0.4,0.6,0.8")
    parser.add_argument("--filter-rows", default="1000000,10000000")
    parser.add_argument(
        "--only",
        default="throughput,similarity,filter",
        help="sections to run again; the others are kept from the last run's JSON",
    )
    args = parser.parse_args()
    raw = args.out.with_suffix(".json")
    results = json.loads(raw.read_text()) if raw.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "throughput" in args.only:
            print("encoder throughput ...", flush=True)
            results["throughput"] = encoder_throughput()
            print(json.dumps(results["throughput"]), flush=True)
        if "similarity" in args.only:
            print("similarity on flickr8k ...", flush=True)
            results["similarity"] = similarity_on_flickr([float(r) for r in args.rates.split(",")], work)
            print(json.dumps(results["similarity"]), flush=True)
        if "filter" in args.only:
            print("filter ...", flush=True)
            results["filter"] = filter_throughput([int(n) for n in args.filter_rows.split(",")], work)
            print(json.dumps(results["filter"]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(json.dumps(results, indent=1))
    args.out.write_text(render(results["throughput"], results["similarity"], results["filter"]))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
