"""A small hand-written scores file of real Flickr8k photos, with an unreadable image, an
unscored row and captions that try to inject markup."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from cleanpairs.io.scores import write_scores
from cleanpairs.schema import output_fields
from tests.conftest import flickr_slice, run_metadata

ROWS = 40
MISSING_ROW = 3
SCRIPT_ROW, ATTRIBUTE_ROW = 0, 1
SCRIPT_CAPTION = "<script>window.__pwned = 1; alert(1)</script>"
ATTRIBUTE_CAPTION = '"><img src=x onerror="window.__pwned = 2; alert(2)">'


def write_review_scores(folder: Path, rows: int = ROWS) -> Path:
    """A scores file of ``rows`` pairs: ``cp_p_clean`` = row / rows (row 0 the lowest), the
    missing image's row unscored, rows 0 and 1 captioned with markup, even rows clean."""
    photos = flickr_slice(12)
    images = photos.column("image").to_pylist()[::5][:12]
    keys = [f"k{i:03d}" for i in range(rows)]
    table = pa.table(
        {
            "key": keys,
            "image": [
                str(folder / "gone.jpg") if i == MISSING_ROW else images[i % len(images)] for i in range(rows)
            ],
            "caption": [
                SCRIPT_CAPTION
                if i == SCRIPT_ROW
                else ATTRIBUTE_CAPTION
                if i == ATTRIBUTE_ROW
                else f"caption {i}"
                for i in range(rows)
            ],
            "is_clean": [i % 2 == 0 for i in range(rows)],
        }
    )
    p = np.arange(rows, dtype=np.float32) / rows
    scored = np.arange(rows) != MISSING_ROW
    fields = {f.name: f.type for f in output_fields(pa.string())}
    columns = {
        "cp_p_clean": pa.array(p, fields["cp_p_clean"], mask=~scored),
        "cp_soft_label": pa.array(p, fields["cp_soft_label"], mask=~scored),
        "cp_similarity": pa.array(p - 0.5, fields["cp_similarity"], mask=~scored),
        "cp_rematch_key": pa.array([keys[-1] if i == 2 else None for i in range(rows)], pa.string()),
        "cp_rematch_score": pa.array([0.8 if i == 2 else None for i in range(rows)], pa.float32()),
        "cp_status": pa.array(["image file not found" if not ok else "ok" for ok in scored]),
    }
    meta = run_metadata(rows, {"key": "key", "image": "image", "caption": "caption"})
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "scores.parquet"
    write_scores(table, columns, meta, path)
    return path


@pytest.fixture
def review_scores(tmp_path: Path) -> Path:
    return write_review_scores(tmp_path / "in")
