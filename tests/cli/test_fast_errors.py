"""Bad input is answered before anything heavy is imported: ``score``, ``info``, ``filter`` and
``export`` check files, columns, method, parameters and encoder first, so the one-line error
comes in well under two seconds instead of after torch has loaded.

Each command runs through the console-script function in a fresh interpreter, which then
reports its exit code, its stderr and which heavy packages sit in ``sys.modules``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cleanpairs.io.scores import write_scores
from cleanpairs.schema import P_CLEAN, STATUS, output_fields
from tests.conftest import flickr_slice, run_metadata

HEAVY = (
    "torch",
    "torchvision",
    "timm",
    "open_clip",
    "sentence_transformers",
    "faiss",
    "ot",
    "sklearn",
    "matplotlib",
)

# Runs each argument list through cleanpairs.cli.main:main in turn and prints one JSON line per
# run. The heavy modules are read after every run, so the first run to import one is named.
PROBE = r"""
import contextlib, io, json, sys
from cleanpairs.cli.main import main

heavy, runs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for args in runs:
    sys.argv = ["cleanpairs", *args]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main()  # the console script exits with what main returns
        except SystemExit as stop:
            code = stop.code
    loaded = sorted(m for m in heavy if m in sys.modules)
    print(json.dumps({"args": args, "code": code, "stderr": err.getvalue(), "heavy": loaded}))
"""


def probe(runs: list[list[str]]) -> list[dict]:
    """Run the CLI on each argument list in one fresh interpreter; one report per run."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(HEAVY), json.dumps(runs)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    reports = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"args"')]
    assert len(reports) == len(runs), done.stdout + done.stderr
    return reports


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small real corpus, a scores file, and the broken inputs the commands must refuse."""
    folder = tmp_path_factory.mktemp("fast-errors")
    corpus = flickr_slice(2)
    pq.write_table(corpus, folder / "corpus.parquet")
    pq.write_table(corpus.drop_columns(["caption"]), folder / "no_caption.parquet")
    pq.write_table(
        pa.table({"key": [1, 1], "image": ["a.jpg", "b.jpg"], "caption": ["x", "y"]}), folder / "dup.parquet"
    )
    (folder / "text.parquet").write_text("key,image,caption\n1,a.jpg,a dog\n")
    n = corpus.num_rows
    columns = {f.name: pa.nulls(n, f.type) for f in output_fields(pa.string())}
    columns[P_CLEAN] = pa.array(np.linspace(0, 1, n, dtype=np.float32))
    columns[STATUS] = pa.array(["ok"] * n)
    table = corpus.append_column("is_clean", pa.array([True] * n))
    write_scores(table, columns, run_metadata(n, {"key": "key"}), folder / "scores.parquet")
    return {p.stem: p for p in folder.iterdir()} | {"missing": folder / "missing.parquet", "dir": folder}


def check_refused(reports: list[dict], expected: list[str]) -> None:
    for report, message in zip(reports, expected, strict=True):
        where = " ".join(report["args"])
        lines = report["stderr"].strip().splitlines()
        assert report["code"] == 2, f"{where}: exit {report['code']}, stderr {report['stderr']!r}"
        assert len(lines) == 1 and lines[0].startswith("error: "), f"{where}: {report['stderr']!r}"
        assert message in lines[0], f"{where}: {lines[0]!r} does not say {message!r}"
        assert report["heavy"] == [], f"{where} imported {report['heavy']} before refusing"


def refused(files: dict[str, Path], cases: list[tuple[list[object], str]]) -> None:
    """Every case exits 2 with one line saying the message, imports nothing heavy, writes nothing."""
    before = sorted(files["dir"].iterdir())
    reports = probe([[str(a) for a in args] for args, _ in cases])
    check_refused(reports, [message for _, message in cases])
    assert sorted(files["dir"].iterdir()) == before


def test_score_refuses_bad_input_before_importing_torch(files, tmp_path):
    out = ["-o", tmp_path / "s.parquet"]
    refused(
        files,
        [
            (["score", files["missing"], *out], "no such file or folder"),
            (["score", files["no_caption"], *out], "columns present"),
            (["score", files["dup"], *out], "repeats 1 keys"),
            (["score", files["text"], *out], "text.parquet"),
            (["score", files["corpus"], *out, "--method", "magic"], "unknown method 'magic'"),
            (["score", files["corpus"], *out, "--method", "ncr", "--param", "epochs=0"],
             "The 'epochs' parameter of ncr"),
            (["score", files["corpus"], *out, "--param", "nope=1"], "robust has no parameter 'nope'"),
            (["score", files["corpus"], *out, "--param", "epochs"], "--param takes NAME=VALUE"),
            (["score", files["corpus"], *out, "--method", "crcl", "--param", "stages=x"], "'stages'"),
            (["score", files["corpus"], *out, "--encoder", "clip"], "unknown encoder 'clip'"),
            (["score", files["corpus"], *out, "--rematch", "--rematch-k", "0"], "rematch 'k'"),
            (["score", files["corpus"], *out, "--method", "mscn"], "trusted set"),
            (["score", files["corpus"], "-o", files["corpus"]], "would overwrite the input"),
        ],
    )
    assert not (tmp_path / "s.parquet").exists()


def test_info_refuses_bad_input_and_reads_a_scores_file_without_heavy_imports(files):
    refused(
        files,
        [
            (["info", files["missing"]], "no such file"),
            (["info", files["text"]], "cannot read"),
            (["info", files["corpus"]], "not a scores file"),
            (["info", files["scores"], "--truth", "nope"], "no column 'nope'"),
        ],
    )
    (summary,) = probe([["info", str(files["scores"])]])
    assert summary["code"] == 0 and summary["heavy"] == [], summary


def test_filter_refuses_bad_input_before_heavy_imports(files, tmp_path):
    out = ["-o", tmp_path / "kept.parquet"]
    refused(
        files,
        [
            (["filter", files["missing"], *out], "no such file"),
            (["filter", files["text"], *out], "cannot read"),
            (["filter", files["corpus"], *out], "not a scores file"),
            (["filter", files["scores"], *out, "--thresh", "2"], "--thresh"),
            (["filter", files["scores"], "-o", files["scores"]], "overwrite"),
        ],
    )
    assert not (tmp_path / "kept.parquet").exists()


def test_export_refuses_bad_input_before_heavy_imports(files, tmp_path):
    out = ["-o", tmp_path / "shards"]
    refused(
        files,
        [
            (["export", files["missing"], *out], "no such file"),
            (["export", files["text"], *out], "cannot read"),
            (["export", files["corpus"], *out], "not a scores file"),
            (["export", files["scores"], *out, "--format", "zip"], "--format"),
        ],
    )
    assert not (tmp_path / "shards").exists()


def test_methods_and_help_import_no_trainer(files):
    commands = ["score", "info", "filter", "export", "methods", "demo-corpus", "train", "eval", "search"]
    reports = probe(
        [["methods"], ["methods", "--details", "ncr"], ["--help"], *[[c, "-h"] for c in [*commands, "bench"]]]
    )
    assert all(r["code"] == 0 for r in reports), [r for r in reports if r["code"] != 0]
    assert all(r["heavy"] == [] for r in reports), [(r["args"], r["heavy"]) for r in reports if r["heavy"]]
    check_refused(probe([["methods", "--details", "nope"]]), ["unknown method 'nope'"])
