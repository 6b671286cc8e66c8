"""Writing the review site: ``index.html`` (styles, script and pair data inline), the
histogram and the thumbnails, into a folder that opens from disk with no server or network."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import cleanpairs
from cleanpairs.errors import ParameterError
from cleanpairs.io.atomic import (
    OWNED_MANIFEST,
    atomic_output,
    check_replaceable_folder,
    refuse_overwrite,
)
from cleanpairs.io.images import check_max_pixels
from cleanpairs.review.plot import write_histogram
from cleanpairs.review.select import Selection, Selector
from cleanpairs.review.source import Shard, open_shards, partner_captions, read_rows, scan
from cleanpairs.review.stats import KEEP_AT, ScoreStats
from cleanpairs.review.thumbs import write_thumbnail
from cleanpairs.schema import STATUS_OK

MANIFEST = OWNED_MANIFEST
"""Written into every review folder: what it shows and the files it wrote. A folder holding
only a manifest and its files is an earlier review, which a new one replaces whole; any other
non-empty folder is refused."""
MANIFEST_FORMAT = "cleanpairs-review"

MAX_PER_PART = 2000
"""The most pairs one grid may hold: the page stays a few thousand pairs whatever the corpus."""
UNSCORED_SHOWN = 48
"""How many rows with no score (unreadable images, empty captions) the page shows."""


@dataclass(frozen=True)
class ReviewResult:
    """What a review wrote: its ``index.html`` and how many pairs each grid holds."""

    index: Path
    worst: int
    borderline: int
    sample: int
    unscored: int
    thumbnails: int
    unreadable: int


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_PER_PART:
        raise ParameterError(f"--{name} must be an integer within [0, {MAX_PER_PART}]; got {value!r}")


def check_review_target(out_dir: str | os.PathLike) -> None:
    """Raise :class:`InputError` unless ``out_dir`` may take a review: absent, empty, or an
    earlier review holding only its manifest and the files it names."""
    check_replaceable_folder(out_dir, MANIFEST_FORMAT, "review")


def safe_json(value: object) -> str:
    """``value`` as JSON that is safe inside an HTML ``<script>`` element: ``<``, ``>`` and ``&``
    are written as ``\\u003c`` etc., so no corpus text can close the element."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    for char, escaped in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e")):
        text = text.replace(char, escaped)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _finite(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else x


def _run_facts(source: str | os.PathLike, shards: list[Shard], stats: ScoreStats, truth: str | None) -> dict:
    meta = shards[0].meta
    noise = [s.meta.estimated_noise_rate for s in shards]
    weights = [s.meta.scored_rows for s in shards]
    estimated = None
    if all(n is not None for n in noise) and sum(weights):
        estimated = sum(n * w for n, w in zip(noise, weights, strict=True)) / sum(weights)
    detection = stats.detection()
    det = None
    if detection is not None:
        det = {k: _finite(v) if isinstance(v, float) else v for k, v in dataclasses.asdict(detection).items()}
    return {
        "source": os.path.abspath(source),
        "shards": len(shards),
        "method": meta.method,
        "encoder": meta.encoder,
        "rows": stats.rows,
        "scored": stats.scored,
        "not_scored": sorted(
            ([str(k), v] for k, v in stats.statuses.items() if k != STATUS_OK), key=lambda kv: -kv[1]
        ),
        "estimated_noise_rate": estimated,
        "thresh": stats.thresh,
        "kept_at": [[t, stats.kept_at.get(t, 0)] for t in sorted({*KEEP_AT, stats.thresh})],
        "truth": truth,
        "detection": det,
    }


def _sections(selection: Selection, position: dict[int, int], stats: ScoreStats) -> list[dict]:
    below = stats.scored - stats.kept_at.get(stats.thresh, 0)
    kept = stats.kept_at.get(stats.thresh, 0)
    parts = [
        (
            "worst",
            "Most likely mismatched",
            selection.worst,
            f"lowest cp_p_clean first; {below:,} scored pairs are below the threshold {stats.thresh:g}",
        ),
        (
            "borderline",
            "Borderline",
            selection.borderline,
            f"the pairs nearest the threshold {stats.thresh:g}, in order of cp_p_clean",
        ),
        (
            "sample",
            "Random sample of kept pairs",
            selection.sample,
            f"drawn uniformly from the {kept:,} pairs with cp_p_clean >= {stats.thresh:g}",
        ),
        (
            "unscored",
            "Not scored",
            selection.unscored,
            "the first rows with no score; their cp_status says why",
        ),
    ]
    return [
        {"id": pid, "title": title, "note": note, "rows": [position[r] for r in rows.tolist()]}
        for pid, title, rows, note in parts
        if pid != "unscored" or len(rows)
    ]


def _page(data: dict) -> str:
    assets = resources.files("cleanpairs.review") / "assets"
    html = (assets / "page.html").read_text(encoding="utf-8")
    css = (assets / "review.css").read_text(encoding="utf-8")
    js = (assets / "review.js").read_text(encoding="utf-8")
    # Placeholders replaced once each, data last: nothing in the data is ever read as a placeholder.
    head, _, tail = html.partition("/*DATA*/")
    head = head.replace("/*CSS*/", css)
    tail = tail.replace("/*JS*/", js)
    return head + safe_json(data) + tail


def build_review(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    truth: str | None = None,
    thresh: float = 0.5,
    worst: int = 200,
    borderline: int = 100,
    sample: int = 100,
    seed: int = 0,
    max_image_pixels: int | None = None,
) -> ReviewResult:
    """Write a static review site of the scores in ``source`` (a scores file, or a folder of
    score shards read as one table in name order) into the folder ``out_dir``.

    The page shows the run and its counts, a histogram of ``cp_p_clean`` (clean and noisy
    stacked, with AUROC and F1, where ``truth`` names a boolean column true for clean pairs), and
    grids of the ``worst`` pairs most likely mismatched, the ``borderline`` pairs nearest
    ``thresh``, a random ``sample`` of the kept pairs and the first rows not scored, each with a
    small JPEG thumbnail. The pairs are chosen while streaming the scores, so memory and the page's
    size do not grow with the corpus. Reviewers mark pairs keep / drop in the page and download the
    keys for ``cleanpairs filter --keep-keys / --drop-keys``.

    Raises
    ------
    InputError
        ``source`` is not a scores file or folder of them, the truth column is missing or not
        boolean, or ``out_dir`` is not new, empty or an earlier review; nothing is written.
    ParameterError
        A count or the threshold is out of range.
    """
    if not 0.0 <= thresh <= 1.0:
        raise ParameterError(f"--thresh must be within [0, 1]; got {thresh}")
    for name, value in (("worst", worst), ("borderline", borderline), ("sample", sample)):
        _check_count(name, value)
    check_max_pixels(max_image_pixels)
    refuse_overwrite(out_dir, [source])
    check_review_target(out_dir)
    shards = open_shards(source)
    selector = Selector(
        thresh=thresh, worst=worst, borderline=borderline, sample=sample, unscored=UNSCORED_SHOWN, seed=seed
    )
    selection, stats = scan(shards, selector, ScoreStats(thresh, with_truth=truth is not None), truth)
    rows = selection.rows()
    position = {row: n for n, row in enumerate(rows.tolist())}
    with atomic_output(out_dir, directory=True) as tmp:
        (tmp / "thumbs").mkdir()

        def thumbnail(row: int, ref: str | bytes | None) -> dict:
            name = f"thumbs/{position[row]:05d}.jpg"
            problem = write_thumbnail(ref, tmp / name, max_pixels=max_image_pixels)
            return {"thumb": name if problem is None else None, "problem": problem}

        records = read_rows(shards, rows, truth, thumbnail)
        captions = partner_captions(shards, {r["rematch_key"] for r in records.values() if r["rematch_key"]})
        pairs = [records[row] for row in rows.tolist()]
        for record in pairs:
            record["rematch_caption"] = captions.get(record["rematch_key"]) if record["rematch_key"] else None
        thumbs = [record["thumb"] for record in pairs if record["thumb"]]
        unreadable = len(pairs) - len(thumbs)
        files = ["index.html", "histogram.svg", *thumbs]
        write_histogram(stats, tmp / "histogram.svg")
        data = {
            "run": _run_facts(source, shards, stats, truth),
            "sections": _sections(selection, position, stats),
            "pairs": pairs,
        }
        (tmp / "index.html").write_text(_page(data), encoding="utf-8")
        manifest = {
            "format": MANIFEST_FORMAT,
            "version": cleanpairs.__version__,
            "source": os.path.abspath(source),
            "settings": {
                "truth": truth,
                "thresh": thresh,
                "worst": worst,
                "borderline": borderline,
                "sample": sample,
                "seed": seed,
            },
            "files": [*files, "thumbs"],
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return ReviewResult(
        index=Path(out_dir) / "index.html",
        worst=len(selection.worst),
        borderline=len(selection.borderline),
        sample=len(selection.sample),
        unscored=len(selection.unscored),
        thumbnails=len(rows) - unreadable,
        unreadable=unreadable,
    )
