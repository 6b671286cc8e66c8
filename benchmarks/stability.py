"""Training stability across noise rates: two-head co-teaching (`ncr`) against tripartite
learning (`tsvc`), whose paper claims steadier training. Flickr8k train (30,000 pairs, offline
encoder, warm embedding cache) with 20-80% of captions shuffled, seeds 0-2. After every training
epoch the method's `on_epoch` observer hands over the heads it would return, and their rSum on
Flickr8k dev is recorded. Per method and rate: the final rSum's mean and std over seeds, the std
over the epochs of the second half of training (mean over seeds), and the largest drop from the
best epoch to the last (mean and worst over seeds).

Writes results/stability.json and a markdown section (`--out`, default results/stability.md)
for docs/benchmarks.md. Run: `python benchmarks/stability.py [--methods ncr,tsvc]
[--rates 0.2,0.4,0.6,0.8] [--seeds 0,1,2]`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from cleanpairs.bench import NoiseCase, heads_rsum, inject
from cleanpairs.encoders import embed_corpus
from cleanpairs.io.tables import read_pairs
from cleanpairs.methods import Heads, PairEmbeddings, get_method
from cleanpairs.metrics import detection_metrics

ROOT = Path(__file__).resolve().parents[1]
FLICKR = ROOT.parent / "shared" / "data" / "flickr8k"
NOISE_SEED = 0


def embedded(split: str) -> PairEmbeddings:
    """A Flickr8k split's embeddings (from the cache)."""
    return embed_corpus(read_pairs(FLICKR / f"{split}.parquet"), "offline", progress=False).pairs


def run_one(method: str, seed: int, pairs: PairEmbeddings, clean: np.ndarray, dev: PairEmbeddings) -> dict:
    """One fit: the dev rSum after every epoch, the final detection AUROC, the fit's seconds."""
    curve: list[float] = []

    def watch(epoch: int, heads: Heads) -> None:
        curve.append(heads_rsum(heads, dev))

    scorer = get_method(method)(seed=seed, on_epoch=watch)
    tick = time.perf_counter()
    scores = scorer.fit(pairs).score()
    seconds = time.perf_counter() - tick
    return {
        "curve": curve,
        "final_rsum": heads_rsum(scores.heads, dev),
        "auroc": detection_metrics(scores.p_clean, clean)["auroc"],
        "fit_s_with_watching": seconds,
    }


def late_std(curve: list[float]) -> float:
    """Std of the rSum over the second half of the epochs (the last one included)."""
    half = np.asarray(curve[len(curve) // 2 :], dtype=np.float64)
    return float(half.std())


def drop_from_best(curve: list[float]) -> float:
    """How far the last epoch's rSum lies below the best epoch's (0 when the last is the best)."""
    return float(max(curve) - curve[-1])


def summarise(runs: list[dict]) -> dict:
    finals = np.array([r["final_rsum"] for r in runs])
    drops = np.array([drop_from_best(r["curve"]) for r in runs])
    return {
        "final_rsum_mean": float(finals.mean()),
        "final_rsum_std_over_seeds": float(finals.std()),
        "late_epoch_std": float(np.mean([late_std(r["curve"]) for r in runs])),
        "drop_from_best_mean": float(drops.mean()),
        "drop_from_best_max": float(drops.max()),
        "auroc_mean": float(np.mean([r["auroc"] for r in runs])),
        "epochs": len(runs[0]["curve"]),
    }


def merged(kept: list[dict], fresh: list[dict]) -> list[dict]:
    """Rows of this run, plus those of the last run for methods and rates not run this time."""
    done = {(r["method"], r["rate"]) for r in fresh}
    rows = [r for r in kept if (r["method"], r["rate"]) not in done] + fresh
    return sorted(rows, key=lambda r: (r["rate"], r["method"]))


def render(results: dict) -> str:
    lines = [
        "",
        "## Training stability: `ncr` (two heads) against `tsvc` (three heads)",
        "",
        "`benchmarks/stability.py`. Flickr8k train, caption shuffle (noise seed 0), each method with its",
        f"defaults and seeds {', '.join(str(s) for s in results['seeds'])}; dev rSum (R@1+5+10 both ways,",
        "clean ceiling 239.5) of the heads the method would return, after every epoch. Final: mean ± std",
        "over seeds. Late std: std of the rSum over the second half of the epochs, mean over seeds.",
        "Drop: best epoch's rSum minus the last epoch's (mean over seeds / worst seed).",
        "",
        "| noise | method | final rSum | late-epoch std | drop from best (mean / max) | AUROC | epochs |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in results["rows"]:
        s = row["summary"]
        lines.append(
            f"| {row['rate']:.0%} | {row['method']} | {s['final_rsum_mean']:.1f} ± "
            f"{s['final_rsum_std_over_seeds']:.1f} | {s['late_epoch_std']:.2f} | "
            f"{s['drop_from_best_mean']:.1f} / {s['drop_from_best_max']:.1f} | {s['auroc_mean']:.4f} | "
            f"{s['epochs']} |"
        )
    spread = results["spread_over_rates"]
    lines += [
        "",
        "Spread over noise rates of the final rSum (max - min of the per-rate means): "
        + ", ".join(f"{m} {v:.1f}" for m, v in spread.items())
        + ".",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--methods", default="ncr,tsvc")
    parser.add_argument("--rates", default="0.2,0.4,0.6,0.8")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "stability.md")
    args = parser.parse_args()
    methods = args.methods.split(",")
    rates = [float(r) for r in args.rates.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    train = embedded("train")
    dev = embedded("dev")
    rows = []
    for rate in rates:
        pairs, noise = inject(train, NoiseCase("shuffle", rate, NOISE_SEED))
        clean = noise.is_clean
        for method in methods:
            runs = []
            for seed in seeds:
                run = run_one(method, seed, pairs, clean, dev)
                print(json.dumps({"method": method, "rate": rate, "seed": seed, **run}), flush=True)
                runs.append(run)
            rows.append({"method": method, "rate": rate, "runs": runs, "summary": summarise(runs)})
    raw = args.out.with_suffix(".json")
    rows = merged(json.loads(raw.read_text())["rows"] if raw.exists() else [], rows)
    names = list(dict.fromkeys(r["method"] for r in rows))
    spread = {
        m: float(np.ptp([r["summary"]["final_rsum_mean"] for r in rows if r["method"] == m])) for m in names
    }
    results = {"seeds": seeds, "rows": rows, "spread_over_rates": spread}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(json.dumps(results, indent=1))
    args.out.write_text(render(results))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
