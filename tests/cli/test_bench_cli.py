"""``cleanpairs bench`` on real photos: the results folder, resuming, and bad input."""

import csv

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cleanpairs.cli.main import app
from tests.conftest import flickr_slice

runner = CliRunner()
FAST: list[str] = []  # similarity with its defaults takes ~1 s here


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench")
    pq.write_table(flickr_slice(40, offset=700), folder / "train.parquet")
    pq.write_table(flickr_slice(20, split="dev"), folder / "dev.parquet")
    return folder


@pytest.fixture(scope="module")
def results(corpora, cache_dir):
    out = corpora / "results"
    args = [
        "bench",
        corpora / "train.parquet",
        "-o",
        out,
        "--methods",
        "similarity",
        "--noise",
        "shuffle:0.3",
    ]
    args += ["--noise", "image:0.3", "--seeds", "0,1", "--eval", corpora / "dev.parquet"]
    result = invoke(*args, *FAST, "--cache-dir", cache_dir, "--device", "cpu")
    assert result.exit_code == 0, result.output
    return out, result.stdout, args


def test_bench_writes_rows_tables_and_plots(results):
    out, stdout, _ = results
    with (out / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {(r["method"], r["kind"], r["seed"]) for r in rows} == {
        (m, k, s)
        for m in ("similarity", "unfiltered", "perfect", "clean")
        for k in ("shuffle", "complete")
        for s in "01"
    }
    similarity = [r for r in rows if r["method"] == "similarity"]
    # Shuffled captions are easy to tell apart; whole caption sets moved (complete) are not.
    assert all(0.7 < float(r["auroc"]) <= 1 for r in similarity if r["kind"] == "shuffle")
    assert all(0 <= float(r["auroc"]) <= 1 for r in similarity)
    assert all(float(r["downstream_rsum"]) > 0 for r in rows)
    report = (out / "report.md").read_text()
    assert "| shuffle 30% | similarity |" in report and "| complete 30% | clean corpus (ceiling) |" in report
    assert "| shuffle 30% | its clean pairs only (perfect filter) |" in report
    for name in ("auroc.png", "p_clean-shuffle-0.3.png", "p_clean-complete-0.3.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "shuffle 30% seed 1  similarity" in stdout and "4 runs measured" not in stdout


def test_resume_runs_only_the_new_seed(results, cache_dir):
    out, _, args = results
    before = (out / "results.csv").read_text().splitlines()
    args = [a if a != "0,1" else "0,1,2" for a in args]
    result = invoke(*args, *FAST, "--cache-dir", cache_dir, "--device", "cpu", "--resume")
    assert result.exit_code == 0, result.output
    after = (out / "results.csv").read_text().splitlines()
    assert after[: len(before)] == before and len(after) == len(before) + 8
    assert "8 runs measured, 16 kept from before" in result.stdout


def test_existing_results_and_changed_settings_are_refused(results, cache_dir):
    out, _, args = results
    before = (out / "results.csv").read_text()
    refused = invoke(*args, *FAST, "--cache-dir", cache_dir)
    assert refused.exit_code == 2 and "pass --resume" in refused.output
    changed = invoke(*args, *FAST, "--cache-dir", cache_dir, "--resume", "--thresh", "0.7")
    assert changed.exit_code == 2 and "other settings" in changed.output
    assert (out / "results.csv").read_text() == before


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--noise", "blur:0.2"], "unknown noise kind 'blur'"),
        (["--noise", "shuffle:1.5"], "within [0, 1]"),
        (["--methods", "mscn"], "mscn learns from a trusted set"),
        (["--seeds", "a"], "--seeds takes integers"),
        (["--param", "epochs=3"], "METHOD.NAME=VALUE"),
        (["--param", "similarity.epochs=0"], "'epochs' parameter of similarity"),
    ],
)
def test_bad_bench_input_is_one_line_and_writes_nothing(corpora, tmp_path, extra, message):
    out = tmp_path / "never"
    result = invoke("bench", corpora / "train.parquet", "-o", out, "--methods", "similarity", *extra)
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_report_only_renders_the_folder_again_without_running(results):
    out, _, _ = results
    report = (out / "report.md").read_text()
    (out / "report.md").unlink()
    (out / "auroc.png").unlink()
    rows_before = (out / "results.csv").read_text()
    result = invoke("bench", "ignored.parquet", "-o", out, "--report-only")
    assert result.exit_code == 0, result.output
    assert (out / "report.md").read_text() == report and (out / "auroc.png").exists()
    assert (out / "results.csv").read_text() == rows_before


def test_report_only_of_a_folder_without_results_is_refused(tmp_path):
    result = invoke("bench", "ignored.parquet", "-o", tmp_path, "--report-only")
    assert result.exit_code == 2 and "holds no benchmark results" in result.output
