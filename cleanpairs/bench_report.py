"""Tables and figures of a benchmark's rows: the markdown that goes into docs/benchmarks.md,
AUROC per noise rate and method, and histograms of ``cp_p_clean`` for clean and noisy pairs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from cleanpairs.bench import CLEAN, REFERENCES
from cleanpairs.noise import NOISE_KINDS

NUMERIC = (
    "true_noise_rate", "estimated_noise_rate", "auroc", "ap", "f1", "wall_s", "fit_s", "rematch_s",
    "rematch_accuracy", "rematch_coverage", "export_rematch_accuracy", "export_rematch_coverage",
    "heads_rsum", "kept", "downstream_rows", "downstream_rsum",
)  # fmt: skip


def _number(value: Any) -> float:
    return float("nan") if value is None else float(value)


def aggregate(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (noise kind, rate, method): each metric's mean and std over the seeds.

    Entries are ordered by noise kind (as :data:`NOISE_KINDS`), rate, then the order in which
    methods first appear, the downstream references last.
    """
    groups: dict[tuple[str, float, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((str(row["kind"]), float(row["rate"]), str(row["method"])), []).append(row)
    # Methods in the order they first ran; the downstream references after them.
    methods = [m for m in dict.fromkeys(str(r["method"]) for r in rows) if m not in REFERENCES]
    method_order = {m: i for i, m in enumerate([*methods, *REFERENCES])}
    kind_order = {k: i for i, k in enumerate(NOISE_KINDS)}
    out = []
    for (kind, rate, method), members in sorted(
        groups.items(), key=lambda kv: (kind_order.get(kv[0][0], 99), kv[0][1], method_order[kv[0][2]])
    ):
        entry: dict[str, Any] = {"kind": kind, "rate": rate, "method": method, "seeds": len(members)}
        for name in NUMERIC:
            values = np.array([_number(m.get(name)) for m in members])
            values = values[~np.isnan(values)]
            entry[name] = float(values.mean()) if len(values) else float("nan")
            entry[f"{name}_std"] = float(values.std()) if len(values) > 1 else float("nan")
        out.append(entry)
    return out


def _cell(entry: dict[str, Any], name: str, spec: str, scale: float = 1.0) -> str:
    mean, std = entry[name], entry[f"{name}_std"]
    if math.isnan(mean):
        return "–"
    text = format(mean * scale, spec)
    return text if math.isnan(std) else f"{text} ± {format(std * scale, spec)}"


def _noise(entry: dict[str, Any]) -> str:
    return f"{entry['kind']} {entry['rate']:.0%}"


def detection_table(groups: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| noise | method | AUROC | AP | F1 @0.5 | est. noise (true) | wall s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for g in groups:
        if g["method"] in REFERENCES:
            continue
        lines.append(
            f"| {_noise(g)} | {g['method']} | {_cell(g, 'auroc', '.4f')} | {_cell(g, 'ap', '.4f')} | "
            f"{_cell(g, 'f1', '.3f')} | {_cell(g, 'estimated_noise_rate', '.1f', 100)}% "
            f"({g['true_noise_rate']:.1%}) | {_cell(g, 'wall_s', '.1f')} |"
        )
    return lines


def worst_case_table(groups: list[dict[str, Any]]) -> list[str]:
    """AUROC of each method in every noise case, and its worst case (the lowest of them), the
    number a user who does not know their corpus's kind of noise can count on."""
    cases = list(dict.fromkeys(_noise(g) for g in groups))
    methods = list(dict.fromkeys(g["method"] for g in groups if g["method"] not in REFERENCES))
    auroc = {(g["method"], _noise(g)): g["auroc"] for g in groups}
    best = {c: max((auroc.get((m, c), float("nan")) for m in methods), default=float("nan")) for c in cases}
    lines = [
        f"| method | {' | '.join(cases)} | worst case |",
        f"| --- |{' ---: |' * len(cases)} ---: |",
    ]
    for method in methods:
        values = [auroc.get((method, c), float("nan")) for c in cases]
        measured = [v for v in values if not math.isnan(v)]
        cells = ["–" if math.isnan(v) else (f"**{v:.4f}**" if v == best[c] else f"{v:.4f}")
                 for v, c in zip(values, cases, strict=True)]  # fmt: skip
        worst = f"{min(measured):.4f}" + ("" if len(measured) == len(cases) else " (of the cases run)")
        lines.append(f"| {method} | {' | '.join(cells)} | {worst if measured else '–'} |")
    return lines


def retrieval_table(groups: list[dict[str, Any]]) -> list[str]:
    ceiling = {(g["kind"], g["rate"]): g["downstream_rsum"] for g in groups if g["method"] == CLEAN}
    lines = [
        "| noise | trained on | pairs kept | downstream rSum | % of clean | method's heads rSum |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for g in groups:
        if math.isnan(g["downstream_rsum"]) and math.isnan(g["heads_rsum"]):
            continue
        top = ceiling.get((g["kind"], g["rate"]), float("nan"))
        name = REFERENCES.get(g["method"], f"{g['method']}-filtered")
        share = g["downstream_rsum"] / top if top and not math.isnan(top) else float("nan")
        lines.append(
            f"| {_noise(g)} | {name} | {_cell(g, 'downstream_rows', '.0f')} | "
            f"{_cell(g, 'downstream_rsum', '.1f')} | {'–' if math.isnan(share) else f'{share:.1%}'} | "
            f"{_cell(g, 'heads_rsum', '.1f')} |"
        )
    return lines


def rematch_table(groups: list[dict[str, Any]], export_thresh: float) -> list[str]:
    lines = [
        f"| noise | method | accuracy | coverage | accuracy @{export_thresh:g} | coverage @{export_thresh:g} "
        "| rematch s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for g in groups:
        if math.isnan(g["rematch_accuracy"]) and math.isnan(g["rematch_coverage"]):
            continue
        lines.append(
            f"| {_noise(g)} | {g['method']} | {_cell(g, 'rematch_accuracy', '.1f', 100)}% | "
            f"{_cell(g, 'rematch_coverage', '.1f', 100)}% | "
            f"{_cell(g, 'export_rematch_accuracy', '.1f', 100)}% | "
            f"{_cell(g, 'export_rematch_coverage', '.1f', 100)}% | {_cell(g, 'rematch_s', '.1f')} |"
        )
    return lines


def render_report(
    rows: Sequence[dict[str, Any]], *, heading: str, description: str, export_thresh: float
) -> str:
    """The benchmark's markdown: detection, downstream retrieval and rematching tables.

    Cells hold the mean over seeds, ``± std`` where there were several.
    """
    groups = aggregate(rows)
    parts = [f"## {heading}", "", description, "", "### Detection", "", *detection_table(groups)]
    if len({_noise(g) for g in groups}) > 1:
        parts += ["", "### Worst case over the noise cases (AUROC; the best of each case in bold)", "",
                  *worst_case_table(groups)]  # fmt: skip
    retrieval = retrieval_table(groups)
    if len(retrieval) > 2:
        parts += ["", "### Downstream retrieval", "", *retrieval]
    rematch = rematch_table(groups, export_thresh)
    if len(rematch) > 2:
        parts += ["", "### Rematching", "", *rematch]
    return "\n".join(parts) + "\n"


def auroc_figure(rows: Sequence[dict[str, Any]]) -> Any:
    """Detection AUROC against the noise rate, one line per method, one panel per noise kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [g for g in aggregate(rows) if g["method"] not in REFERENCES]
    kinds = list(dict.fromkeys(g["kind"] for g in groups))
    figure, axes = plt.subplots(1, max(len(kinds), 1), figsize=(4.2 * max(len(kinds), 1), 3.4), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=False):
        for method in dict.fromkeys(g["method"] for g in groups):
            points = [g for g in groups if g["kind"] == kind and g["method"] == method]
            if points:
                rates = [100 * g["rate"] for g in points]
                ax.errorbar(
                    rates, [g["auroc"] for g in points], yerr=[np.nan_to_num(g["auroc_std"]) for g in points],
                    marker="o", capsize=3, label=method,
                )  # fmt: skip
        ax.set_title(f"{kind} noise")
        ax.set_xlabel("noise rate (%)")
        ax.set_ylabel("AUROC of cp_p_clean")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    return figure


def histogram_figure(samples: Sequence[tuple[str, np.ndarray, np.ndarray]], title: str) -> Any:
    """Histograms of ``cp_p_clean`` of the truly clean and the truly noisy pairs, a panel per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(4, max(len(samples), 1))
    rows = math.ceil(len(samples) / columns) or 1
    figure, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 2.6 * rows), squeeze=False)
    bins = np.linspace(0, 1, 26)
    for ax, (method, p_clean, is_clean) in zip(axes.flat, samples, strict=False):
        ax.hist(p_clean[is_clean], bins=bins, alpha=0.6, label="clean", color="tab:blue")
        ax.hist(p_clean[~is_clean], bins=bins, alpha=0.6, label="noisy", color="tab:red")
        ax.set_yscale("log")
        ax.set_title(method, fontsize=9)
        ax.set_xlabel("cp_p_clean")
    for ax in list(axes.flat)[len(samples) :]:
        ax.axis("off")
    axes[0][0].legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    return figure
