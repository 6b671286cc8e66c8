import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cleanpairs.cli.main import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def scores(small_flickr, cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "scores.parquet"
    result = invoke(
        "score",
        small_flickr,
        "-o",
        out,
        "--cache-dir",
        cache_dir,
        "--device",
        "cpu",
        "--param",
        "ncr_epochs=3",
        "--param",
        "crcl_stages=1",
        "--param",
        "batch_size=32",
    )
    assert result.exit_code == 0, result.output
    # No --method: the default, the best worst case of the benchmark.
    assert "scored 60 of 60 rows with robust on offline" in result.stdout
    return out


def test_methods_lists_the_registry():
    result = invoke("methods")
    listed = [line.split()[0] for line in result.stdout.splitlines()]
    assert result.exit_code == 0
    assert listed == ["crcl", "l2rm", "mscn", "ncr", "rcar", "robust", "similarity", "tsvc"]
    details = invoke("methods", "--details", "similarity")
    assert "epochs" in details.stdout and "an int in the range [1, inf)" in details.stdout


@pytest.mark.parametrize(
    ("method", "params"),
    [("ncr", ["epochs=2", "batch_size=16", "soft_margin=linear"]), ("crcl", ["stages=1,1", "batch_size=16"])],
)
def test_score_with_a_robust_method_writes_the_contract(method, params, small_flickr, cache_dir, tmp_path):
    out = tmp_path / "scores.parquet"
    flags = [arg for p in params for arg in ("--param", p)]
    result = invoke("score", small_flickr, "-o", out, "--method", method, "--cache-dir", cache_dir, *flags)
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    assert table.num_rows == 60 and {"cp_p_clean", "cp_soft_label", "cp_status"} <= set(table.column_names)
    info = invoke("info", out)
    assert f"method: {method}" in info.stdout or method in info.stdout
    details = invoke("methods", "--details", method)
    assert "batch_size" in details.stdout


def test_a_bad_crcl_schedule_is_one_line_and_exit_2(small_flickr, tmp_path):
    out = tmp_path / "x.parquet"
    result = invoke("score", small_flickr, "-o", out, "--method", "crcl", "--param", "stages=a")
    assert result.exit_code == 2
    assert "The 'stages' parameter of crcl must be comma-separated" in result.stderr
    assert not out.exists()


def test_info_summarises_a_scores_file(scores):
    result = invoke("info", scores)
    assert result.exit_code == 0
    assert "rows       60 (60 scored)" in result.stdout and "encoder    offline" in result.stdout
    assert result.stdout.count("[0.") == 10


def test_filter_and_export(scores, tmp_path):
    result = invoke(
        "filter",
        scores,
        "--thresh",
        "0.5",
        "-o",
        tmp_path / "kept.parquet",
        "--rejected",
        tmp_path / "rej.parquet",
    )
    assert result.exit_code == 0, result.output
    kept, rej = pq.read_table(tmp_path / "kept.parquet"), pq.read_table(tmp_path / "rej.parquet")
    assert kept.num_rows + rej.num_rows == 60
    assert f"kept {kept.num_rows} of 60 rows" in result.stdout
    result = invoke("export", scores, "--format", "webdataset", "-o", tmp_path / "wds", "--thresh", "0.5")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "wds" / "00000.tar").exists()
    assert f"exported {kept.num_rows} pairs" in result.stdout


def assert_refused(result, message):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


def test_bad_input_is_one_line_and_exit_2(tmp_path, small_flickr, scores):
    assert_refused(invoke("score", tmp_path / "none.parquet"), "no such file or folder")
    pq.write_table(pa.table({"picture": ["a"], "caption": ["b"]}), tmp_path / "cols.parquet")
    assert_refused(invoke("score", tmp_path / "cols.parquet"), "columns present: picture, caption")
    pq.write_table(pa.table({"image": ["a", "b"], "caption": [1, 2]}), tmp_path / "type.parquet")
    assert_refused(invoke("score", tmp_path / "type.parquet"), "must be string, but it holds int64")
    pq.write_table(
        pa.table({"image": pa.array([], pa.string()), "caption": pa.array([], pa.string())}),
        tmp_path / "empty.parquet",
    )
    assert_refused(invoke("score", tmp_path / "empty.parquet"), "zero rows")
    pq.write_table(
        pa.table({"key": [1, 1], "image": ["a", "b"], "caption": ["x", "y"]}), tmp_path / "dup.parquet"
    )
    assert_refused(invoke("score", tmp_path / "dup.parquet"), "repeats 1 keys")
    assert_refused(invoke("score", small_flickr, "-o", small_flickr), "would overwrite the input")
    assert_refused(invoke("score", small_flickr, "--method", "magic"), "unknown method 'magic'")
    assert_refused(invoke("score", small_flickr, "--param", "epochs"), "--param takes NAME=VALUE")
    assert_refused(invoke("score", small_flickr, "--encoder", "clip"), "unknown encoder 'clip'")
    assert_refused(invoke("filter", small_flickr, "-o", tmp_path / "k.parquet"), "not a scores file")
    assert_refused(invoke("filter", scores, "--thresh", "2", "-o", tmp_path / "k.parquet"), "--thresh")
    assert_refused(invoke("export", scores, "--format", "zip", "-o", tmp_path / "x"), "--format")
    assert_refused(invoke("info", scores, "--truth", "nope"), "no column 'nope'")
    written = {p.name for p in tmp_path.iterdir()}
    assert written == {"cols.parquet", "type.parquet", "empty.parquet", "dup.parquet"}


def test_demo_corpus_then_short_form_score_as_a_real_process(tmp_path, cache_dir):
    exe = Path(sys.executable).with_name("cleanpairs")
    env = {**os.environ, "CLEANPAIRS_CACHE": str(cache_dir)}
    made = subprocess.run(
        [exe, "demo-corpus", tmp_path / "demo", "--images", "30", "--captions", "2"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    assert "wrote 60 pairs of 30 pictures" in made.stdout
    corpus = tmp_path / "demo" / "pairs.parquet"
    images = pq.read_table(corpus).column("image").to_pylist()
    assert all(not os.path.isabs(p) for p in images)
    done = subprocess.run(
        [exe, "score", corpus, "--param", "ncr_epochs=2", "--param", "crcl_stages=1"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "demo" / "pairs.scores.parquet").exists()
    info = subprocess.run(
        [exe, "info", tmp_path / "demo" / "pairs.scores.parquet", "--truth", "is_clean"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert info.returncode == 0 and "against is_clean: AUROC" in info.stdout
    bad = subprocess.run(
        [exe, "score", tmp_path / "nothing.csv"], capture_output=True, text=True, check=False
    )
    assert (
        bad.returncode == 2
        and bad.stderr.strip() == f"error: no such file or folder: {tmp_path / 'nothing.csv'}"
    )


@pytest.fixture(scope="module")
def trusted_table(tmp_path_factory):
    """50 clean pairs (10 photos x 5 captions) of Flickr8k dev, the corpus's columns."""
    from tests.conftest import flickr_slice

    path = tmp_path_factory.mktemp("trusted") / "trusted.parquet"
    pq.write_table(flickr_slice(10, split="dev"), path)
    return path


MSCN_FAST = ["--method", "mscn", "--param", "batch_size=16", "--param", "epochs=1", "--device", "cpu"]


def test_mscn_learns_from_a_trusted_table_or_from_corpus_keys(
    small_flickr, trusted_table, cache_dir, tmp_path
):
    from cleanpairs.io.scores import read_run_metadata

    out = tmp_path / "meta.parquet"
    result = invoke(
        "score", small_flickr, "-o", out, "--meta", trusted_table, "--cache-dir", cache_dir, *MSCN_FAST
    )
    assert result.exit_code == 0, result.output
    meta = read_run_metadata(out)
    assert meta.method == "mscn" and meta.extra["trusted_pairs"] == 50
    assert pq.read_table(out).num_rows == 60
    keys = tmp_path / "keys.txt"
    keys.write_text("\n".join(pq.read_table(small_flickr).column("key").to_pylist()[:20]) + "\n")
    by_keys = tmp_path / "keys.parquet"
    result = invoke(
        "score", small_flickr, "-o", by_keys, "--meta-keys", keys, "--cache-dir", cache_dir, *MSCN_FAST
    )
    assert result.exit_code == 0, result.output
    assert read_run_metadata(by_keys).extra["trusted_pairs"] == 20


def test_mscn_without_a_trusted_set_or_with_unknown_keys_is_one_line_and_exit_2(small_flickr, tmp_path):
    out = tmp_path / "x.parquet"
    result = invoke("score", small_flickr, "-o", out, *MSCN_FAST)
    assert result.exit_code == 2 and "--meta" in result.stderr and not out.exists()
    assert len(result.stderr.strip().splitlines()) == 1
    keys = tmp_path / "keys.txt"
    keys.write_text("no-such-key\n")
    result = invoke("score", small_flickr, "-o", out, "--meta-keys", keys, *MSCN_FAST)
    assert result.exit_code == 2 and "no-such-key" in result.stderr and not out.exists()
    result = invoke("score", small_flickr, "-o", out, "--meta-keys", keys, "--method", "ncr")
    assert result.exit_code == 2 and "ncr does not learn from a trusted set" in result.stderr


def test_a_sample_fit_says_whether_it_trained_in_the_corpus_alignment():
    from cleanpairs.cli.main import _alignment_note

    assert _alignment_note(None) == ""
    assert _alignment_note({"aligned": True, "image_share": 0.1, "on_pairs": 600}) == (
        " in the corpus alignment of all 600 pairs"
    )
    unaligned = _alignment_note({"aligned": False, "image_share": 0.7512, "on_pairs": 600})
    assert "unaligned" in unaligned and "0.75" in unaligned and "align=cca" in unaligned
