"""The Python API: cp.score / read_scores / filter / export on pandas DataFrames and pyarrow Tables."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import cleanpairs as cp
from cleanpairs.errors import InputError
from cleanpairs.schema import P_CLEAN, STATUS
from tests.conftest import flickr_slice


def embedded_frame(n: int = 120, noise: float = 0.3, seed: int = 0) -> pd.DataFrame:
    """Pairs with precomputed embeddings; the first ``noise`` share of captions do not match."""
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(n, 16)).astype(np.float32)
    texts = images + 0.3 * rng.normal(size=(n, 16)).astype(np.float32)
    bad = int(noise * n)
    texts[:bad] = rng.normal(size=(bad, 16))
    return pd.DataFrame(
        {
            "key": [f"p{i:03d}" for i in range(n)],
            "image_emb": list(images),
            "text_emb": list(texts),
            "is_clean": np.arange(n) >= bad,
        }
    )


def test_import_cleanpairs_stays_light():
    code = "import sys, cleanpairs; print(sorted(m for m in ('pandas', 'torch') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("kind", ["dataframe", "table", "polars"])
def test_score_a_frame_in_memory(kind):
    frame = embedded_frame()
    table = pa.Table.from_pandas(frame, preserve_index=False)
    data = {"dataframe": frame, "table": table, "polars": pl.from_arrow(table)}[kind]
    scored = cp.score(data, method="similarity", encoder="precomputed", device="cpu")
    assert isinstance(scored, pd.DataFrame) and len(scored) == 120
    assert scored["key"].tolist() == frame["key"].tolist()
    assert (scored[STATUS] == "ok").all()
    assert scored.attrs["cleanpairs"]["method"] == "similarity"
    clean = scored[P_CLEAN].to_numpy()
    assert clean[frame["is_clean"]].mean() > clean[~frame["is_clean"]].mean() + 0.3


def test_score_a_path_writes_only_where_asked(tmp_path):
    frame = embedded_frame()
    frame.to_parquet(tmp_path / "pairs.parquet")
    scored = cp.score(tmp_path / "pairs.parquet", method="similarity", encoder="precomputed", device="cpu")
    assert len(scored) == 120 and sorted(p.name for p in tmp_path.iterdir()) == ["pairs.parquet"]
    cp.score(
        tmp_path / "pairs.parquet", tmp_path / "s.parquet", method="similarity", encoder="precomputed"
    )
    again = cp.read_scores(tmp_path / "s.parquet")
    assert again.attrs["cleanpairs"]["rows"] == 120
    pd.testing.assert_frame_equal(again, scored)


def test_relative_image_paths_in_memory_are_refused():
    frame = pd.DataFrame({"image": ["images/a.jpg", "images/b.jpg"], "caption": ["a", "b"]})
    with pytest.raises(InputError, match=r"relative paths such as 'images/a\.jpg'.*make them absolute"):
        cp.score(frame, method="similarity")


def test_images_as_absolute_paths_in_a_frame_are_scored(cache_dir):
    frame = flickr_slice(8).to_pandas()  # absolute paths to real photos, 40 pairs
    scored = cp.score(frame, method="similarity", encoder="offline", cache_dir=cache_dir, device="cpu")
    assert (scored[STATUS] == "ok").all() and len(scored) == 40


def test_filter_and_export_take_the_scored_frame(tmp_path):
    scored = cp.score(embedded_frame(), method="similarity", encoder="precomputed", device="cpu")
    kept = cp.filter(scored, thresh=0.5)
    assert kept["key"].tolist() == scored.loc[scored[P_CLEAN] >= 0.5, "key"].tolist()
    assert kept.attrs["cleanpairs"]["extra"]["filter"]["thresh"] == 0.5
    counts = cp.export(scored, tmp_path / "keep.txt", format="uids")
    assert counts.rows == len(kept)
    assert (tmp_path / "keep.txt").read_text().splitlines() == kept["key"].tolist()
    with pytest.raises(InputError, match="carries no run metadata"):
        cp.filter(pd.DataFrame({"key": ["a"]}))


def test_a_wrong_kind_of_data_is_one_clear_error():
    with pytest.raises(InputError, match="a pyarrow Table or a pandas or polars DataFrame; got list"):
        cp.score([1, 2, 3])
