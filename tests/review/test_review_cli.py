"""`cleanpairs review` and `filter --keep-keys / --drop-keys`: what a user types and reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cleanpairs.cli.main import app
from cleanpairs.io.scores import write_scores
from cleanpairs.schema import output_fields
from tests.conftest import run_metadata

runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def one_error_line(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


def kept_keys(path: Path) -> list:
    return pq.read_table(path).column("key").to_pylist()


def test_review_prints_the_path_of_its_page(review_scores, tmp_path):
    result = invoke("review", review_scores, "-o", tmp_path / "site", "--worst", 5, "--truth", "is_clean")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str((tmp_path / "site" / "index.html").resolve())
    assert "1 images could not be read" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--thresh", "2"], "--thresh must be within [0, 1]; got 2.0"),
        (["--worst", "-3"], "--worst must be an integer within [0, 2000]; got -3"),
        (["--truth", "missing"], "no column 'missing' in"),
        (["--max-image-pixels", "0"], "--max-image-pixels must be a positive integer"),
    ],
)
def test_review_refuses_bad_settings_in_one_line_and_writes_nothing(review_scores, tmp_path, args, message):
    one_error_line(invoke("review", review_scores, "-o", tmp_path / "site", *args), message)
    assert not (tmp_path / "site").exists()


def test_review_refuses_what_is_not_a_scores_file_or_a_foreign_folder(review_scores, tmp_path):
    one_error_line(invoke("review", tmp_path / "none.parquet", "-o", tmp_path / "site"), "no such file")
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"a": [1]}), plain)
    one_error_line(invoke("review", plain, "-o", tmp_path / "site"), "is not a scores file")
    empty = tmp_path / "empty"
    empty.mkdir()
    one_error_line(
        invoke("review", empty, "-o", tmp_path / "site"), "is a folder with no .parquet scores files"
    )
    assert not (tmp_path / "site").exists()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "a.txt").write_text("x")
    one_error_line(
        invoke("review", review_scores, "-o", tmp_path / "taken"), "no cleanpairs review wrote (a.txt)"
    )
    one_error_line(invoke("review", review_scores, "-o", review_scores.parent), "would overwrite the input")


def test_filter_keeps_and_drops_the_listed_keys_whatever_their_score(review_scores, tmp_path):
    (tmp_path / "drop.txt").write_text("k039\nk030\n")
    (tmp_path / "keep.txt").write_text("k000\r\n\nk001\n")
    result = invoke(
        "filter",
        review_scores,
        "-o",
        tmp_path / "kept.parquet",
        "--drop-keys",
        tmp_path / "drop.txt",
        "--keep-keys",
        tmp_path / "keep.txt",
        "--rejected",
        tmp_path / "rest.parquet",
    )
    assert result.exit_code == 0, result.output
    kept = kept_keys(tmp_path / "kept.parquet")
    assert kept == ["k000", "k001"] + [f"k{i:03d}" for i in range(20, 40) if i not in (30, 39)]
    assert {"k030", "k039"} <= set(kept_keys(tmp_path / "rest.parquet"))
    assert len(kept) + len(kept_keys(tmp_path / "rest.parquet")) == 40
    assert "kept 20 of 40 rows" in result.stdout


def test_filter_refuses_unknown_or_contradicting_keys_and_writes_nothing(review_scores, tmp_path):
    out = tmp_path / "kept.parquet"
    (tmp_path / "unknown.txt").write_text("k000\nnot-a-key\n")
    one_error_line(
        invoke("filter", review_scores, "-o", out, "--drop-keys", tmp_path / "unknown.txt"),
        "--drop-keys: 1 of the 2 keys listed are not keys of",
    )
    assert (
        "scores.parquet, as 'not-a-key'"
        in invoke("filter", review_scores, "-o", out, "--drop-keys", tmp_path / "unknown.txt").stderr
    )
    (tmp_path / "both.txt").write_text("k005\n")
    one_error_line(
        invoke(
            "filter",
            review_scores,
            "-o",
            out,
            "--drop-keys",
            tmp_path / "both.txt",
            "--keep-keys",
            tmp_path / "both.txt",
        ),
        "1 keys are listed in both --keep-keys and --drop-keys, as 'k005'",
    )
    one_error_line(
        invoke("filter", review_scores, "-o", out, "--keep-keys", tmp_path / "absent.txt"),
        "--keep-keys: cannot read",
    )
    assert not out.exists()


def test_integer_and_row_number_keys_read_back_as_numbers(tmp_path):
    rows = 6
    p = pa.array(np.linspace(0, 1, rows, dtype=np.float32))
    columns = {
        "cp_p_clean": p,
        "cp_soft_label": p,
        "cp_similarity": p,
        "cp_rematch_key": pa.nulls(rows, pa.int64()),
        "cp_rematch_score": pa.nulls(rows, pa.float32()),
        "cp_status": pa.array(["ok"] * rows),
    }
    assert [f.name for f in output_fields(pa.int64())] == list(columns)
    table = pa.table({"caption": [f"c{i}" for i in range(rows)]})
    meta = run_metadata(rows, {"key": "__row_number__", "image": None, "caption": "caption"})
    write_scores(table, columns, meta, tmp_path / "s.parquet")
    (tmp_path / "drop.txt").write_text("5\n")
    (tmp_path / "keep.txt").write_text("0\n")
    result = invoke(
        "filter",
        tmp_path / "s.parquet",
        "-o",
        tmp_path / "k.parquet",
        "--drop-keys",
        tmp_path / "drop.txt",
        "--keep-keys",
        tmp_path / "keep.txt",
    )
    assert result.exit_code == 0, result.output
    assert pq.read_table(tmp_path / "k.parquet").column("caption").to_pylist() == ["c0", "c3", "c4"]
    (tmp_path / "words.txt").write_text("five\n")
    one_error_line(
        invoke(
            "filter",
            tmp_path / "s.parquet",
            "-o",
            tmp_path / "k2.parquet",
            "--drop-keys",
            tmp_path / "words.txt",
        ),
        "lists 'five', but the keys are integers",
    )
