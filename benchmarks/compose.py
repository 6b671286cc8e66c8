"""Assemble docs/benchmarks.md from what `make bench` wrote: the foundation and rematch-scale
benchmarks' JSON (docs/benchmarks.json), the report of `cleanpairs bench` (docs/bench/report.md,
with its plots) and the training-stability benchmark (docs/bench/stability.md).

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
    page = DOCS / "benchmarks.md"
    page.write_text("\n".join(part.rstrip() + "\n" for part in parts))
    print(f"wrote {page}")


if __name__ == "__main__":
    main()
