"""`score --rematch` and `export --rematch` on real photos with known shuffled captions."""

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cleanpairs.cli.main import app
from cleanpairs.io.scores import read_run_metadata
from cleanpairs.metrics import rematch_metrics
from tests.conftest import flickr_slice, with_shuffled_captions

runner = CliRunner()
EXPORT_THRESH = 0.15


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def shuffled(tmp_path_factory):
    """100 photos x 5 captions, 20% of the captions moved to other photos; the truth kept."""
    path = tmp_path_factory.mktemp("rematch") / "pairs.parquet"
    pq.write_table(with_shuffled_captions(flickr_slice(100, offset=500), 0.2, seed=3, source=True), path)
    return path


@pytest.fixture(scope="module")
def rematched(shuffled, cache_dir):
    out = shuffled.with_name("scores.parquet")
    result = invoke(
        "score", shuffled, "-o", out, "--method", "ncr", "--param", "batch_size=64",
        "--cache-dir", cache_dir, "--device", "cpu", "--rematch", "--rematch-k", 8,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "rematched" in result.stdout
    return out


def test_score_rematch_proposes_the_captions_written_for_each_image(rematched):
    table = pq.read_table(rematched)
    keys = table.column("key").to_pylist()
    row_of = {k: i for i, k in enumerate(keys)}
    partner = np.array([-1 if k is None else row_of[k] for k in table.column("cp_rematch_key").to_pylist()])
    score = np.array(table.column("cp_rematch_score").to_pylist(), dtype=float)
    pair_image = np.array(table.column("image_id").to_pylist())
    caption_image = np.array(table.column("caption_image_id").to_pylist())
    everything = rematch_metrics(partner, score, pair_image, caption_image)
    confident = rematch_metrics(partner, score, pair_image, caption_image, min_score=EXPORT_THRESH)
    # Chance is about one in the ~100 mismatched captions.
    assert everything["accuracy"] > 0.3 and everything["coverage"] > 0.3
    # What an export at the threshold writes is mostly right (with caption agreement in the
    # split nearly every proposal is, so "better than all proposals" no longer separates).
    assert confident["accuracy"] > 0.9 and confident["coverage"] > 0.1
    p_clean = np.array(table.column("cp_p_clean").to_pylist())
    assert np.all(partner[p_clean >= 0.5] == -1)
    meta = read_run_metadata(rematched)
    assert meta.extra["rematch"]["k"] == 8 and meta.extra["rematch"]["mass"] == 0.5
    assert meta.extra["rematch"]["threshold"] == 0.5
    assert meta.timings["rematch_s"] >= 0


def test_export_rematch_writes_kept_pairs_and_corrected_ones(rematched, tmp_path):
    out = tmp_path / "corrected"
    result = invoke("export", rematched, "-o", out, "--rematch", "--rematch-thresh", EXPORT_THRESH)
    assert result.exit_code == 0, result.output
    exported = pq.read_table(out)
    scores = pq.read_table(rematched)
    caption_of = dict(
        zip(scores.column("key").to_pylist(), scores.column("caption").to_pylist(), strict=True)
    )
    flags = np.array(exported.column("cp_rematched").to_pylist())
    p_clean = np.array(exported.column("cp_p_clean").to_pylist())
    assert flags.any() and (~flags).any()
    assert np.all(p_clean[~flags] >= 0.5) and np.all(p_clean[flags] < 0.5)
    assert np.all(np.array(exported.column("cp_rematch_score").to_pylist())[flags] >= EXPORT_THRESH)
    partners = exported.column("cp_rematch_key").to_pylist()
    captions = exported.column("caption").to_pylist()
    for i in np.flatnonzero(flags):
        assert captions[i] == caption_of[partners[i]]
    assert f"{int(flags.sum())} of them rematched" in result.stdout
    kept = (np.array(scores.column("cp_p_clean").to_pylist()) >= 0.5).sum()
    assert exported.num_rows == kept + flags.sum()


def test_bad_rematch_settings_are_one_line_and_exit_2(shuffled, tmp_path):
    out = tmp_path / "s.parquet"
    result = invoke("score", shuffled, "-o", out, "--rematch", "--rematch-mass", 0)
    assert result.exit_code == 2 and "'mass'" in result.stderr and not out.exists()
    assert len(result.stderr.strip().splitlines()) == 1
