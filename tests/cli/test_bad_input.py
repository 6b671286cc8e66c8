"""Bad input to every command of the installed ``cleanpairs``, run as a user runs it: a real
subprocess in a fresh interpreter. Each case asserts exit code 2, one line on stderr naming the
problem, no traceback, and that no file under the test's folder was written or changed; the
per-row faults assert that every input row is kept with the right ``cp_status``."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

CLEANPAIRS = Path(sys.executable).parent / "cleanpairs"
DIM = 8


def run_cli(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    exe = str(CLEANPAIRS) if CLEANPAIRS.exists() else shutil.which("cleanpairs")
    env = {**os.environ, "CLEANPAIRS_CACHE": str(cwd / ".cache-never-used")}
    return subprocess.run(
        [exe, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300, env=env
    )


def embedded_table(n_images: int = 12, captions: int = 3, seed: int = 0) -> pa.Table:
    """A corpus carrying its own embeddings (``--encoder precomputed``): captions near their image."""
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(n_images, DIM)).astype(np.float32)
    image_id = np.repeat(np.arange(n_images), captions)
    texts = images[image_id] + 0.3 * rng.normal(size=(len(image_id), DIM)).astype(np.float32)
    return pa.table(
        {
            "key": [f"k{i}" for i in range(len(image_id))],
            "caption": [f"caption {i}" for i in range(len(image_id))],
            "image_id": image_id,
            "image_emb": pa.array(images[image_id].tolist(), pa.list_(pa.float32())),
            "text_emb": pa.array(texts.tolist(), pa.list_(pa.float32())),
        }
    )


def write(table: pa.Table, path: Path, metadata: dict[bytes, bytes] | None = None) -> Path:
    if metadata is not None:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    pq.write_table(table, path)
    return path


def huge_png(path: Path, side: int = 15_000) -> Path:
    """A valid PNG of ``side`` x ``side`` grey pixels, a few hundred kB: a decompression bomb."""
    row = b"\x00" + b"\x00" * side
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    header = side.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )
    return path


@pytest.fixture(scope="module")
def ready(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a good corpus, its scores and a trained model, made once by the real CLI."""
    root = tmp_path_factory.mktemp("ready")
    write(embedded_table(), root / "corpus.parquet")
    done = run_cli(
        "score",
        "corpus.parquet",
        "--encoder",
        "precomputed",
        "--method",
        "similarity",
        "-o",
        "scores.parquet",
        cwd=root,
    )
    assert done.returncode == 0, done.stderr
    done = run_cli("train", "scores.parquet", "-o", "model", "--epochs", "1", cwd=root)
    assert done.returncode == 0, done.stderr
    return root


def snapshot(folder: Path) -> dict[str, str]:
    """Every path under ``folder`` with a digest of its content (folders as such)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        out[rel] = "dir" if path.is_dir() else hashlib.sha1(path.read_bytes()).hexdigest()
    return out


@dataclass
class Case:
    name: str
    args: list[str]
    expect: str  # a piece of the one stderr line, lower case
    setup: Callable[[Path], None] | None = None


def _corpus(**columns: object) -> Callable[[Path], None]:
    """Setup writing ``bad.parquet``: the good corpus with columns replaced or dropped (None)."""

    def make(folder: Path) -> None:
        table = embedded_table()
        for name, values in columns.items():
            if values is None:
                table = table.drop_columns([name])
            else:
                index = table.schema.get_field_index(name)
                array = values if isinstance(values, pa.Array) else pa.array(values)
                table = (
                    table.set_column(index, name, array) if index >= 0 else table.append_column(name, array)
                )
        write(table, folder / "bad.parquet")

    return make


def _file(name: str, payload: bytes | str) -> Callable[[Path], None]:
    def make(folder: Path) -> None:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload if isinstance(payload, bytes) else payload.encode())

    return make


def _scores_with_metadata(value: bytes | None) -> Callable[[Path], None]:
    def make(folder: Path) -> None:
        table = pq.read_table(folder / "scores.parquet")
        metadata = {k: v for k, v in (table.schema.metadata or {}).items() if k != b"cleanpairs"}
        if value is not None:
            metadata[b"cleanpairs"] = value
        pq.write_table(table.replace_schema_metadata(metadata), folder / "bad-scores.parquet")

    return make


def _model_damaged(how: str) -> Callable[[Path], None]:
    def make(folder: Path) -> None:
        shutil.copytree(folder / "model", folder / "bad-model")
        target = folder / "bad-model"
        if how == "json":
            (target / "model.json").write_text("{not json")
        elif how == "no-json":
            (target / "model.json").unlink()
        elif how == "pickle":
            import torch

            for head in target.glob("*.pt"):
                torch.save({"weights": Image.new("RGB", (1, 1))}, head)  # needs pickle: refused
        elif how == "no-heads":
            for head in target.glob("*.pt"):
                head.unlink()

    return make


def _foreign_folder(folder: Path) -> None:
    (folder / "out").mkdir()
    (folder / "out" / "important.txt").write_text("the user's own file")
    (folder / "out" / "sub").mkdir()


def _parent_is_file(folder: Path) -> None:
    (folder / "afile").write_text("x")


def _existing_dir(folder: Path) -> None:
    (folder / "adir").mkdir()
    (folder / "adir" / "keep.txt").write_text("x")


SCORE = ["score", "--encoder", "precomputed", "--method", "similarity"]
GOOD = "corpus.parquet"

CASES = [
    # files and file kinds
    Case("score-missing-file", [*SCORE, "missing.parquet"], "no such file"),
    Case("score-empty-folder", [*SCORE, "empty/"], "empty", _file("empty/.keep", "")),
    Case("score-glob-matches-nothing", [*SCORE, "nothing-*.parquet", "-o", "s.parquet"], "match"),
    Case("score-unknown-extension", [*SCORE, "data.txt"], "data.txt", _file("data.txt", "key,caption\n")),
    Case(
        "score-garbage-parquet",
        [*SCORE, "bad.parquet"],
        "bad.parquet",
        _file("bad.parquet", b"PAR1garbagePAR1"),
    ),
    Case(
        "score-truncated-parquet",
        [*SCORE, "cut.parquet"],
        "cut.parquet",
        lambda f: (f / "cut.parquet").write_bytes((f / GOOD).read_bytes()[:200]),
    ),
    Case(
        "score-malformed-csv",
        [*SCORE, "bad.csv"],
        "bad.csv",
        _file("bad.csv", "key,caption\na,b\nc,d,e,f\n"),
    ),
    Case(
        "score-malformed-jsonl",
        [*SCORE, "bad.jsonl"],
        "bad.jsonl",
        _file("bad.jsonl", '{"key": 1, "caption": \n'),
    ),
    Case(
        "score-zero-rows",
        [*SCORE, "bad.parquet"],
        "zero rows",
        lambda f: write(embedded_table().slice(0, 0), f / "bad.parquet"),
    ),
    # columns and types
    Case(
        "score-no-caption-column",
        [*SCORE, "bad.parquet", "--encoder", "offline"],
        "caption",
        _corpus(caption=None, text_emb=None),
    ),
    Case(
        "score-no-image-column",
        ["score", "bad.parquet", "--method", "similarity"],
        "image",
        _corpus(image_emb=None),
    ),
    Case("score-named-column-absent", [*SCORE, GOOD, "--text-col", "nope"], "nope"),
    Case("score-caption-of-ints", [*SCORE, "bad.parquet"], "caption", _corpus(caption=list(range(36)))),
    Case(
        "score-image-of-floats",
        ["score", "bad.parquet", "--method", "similarity"],
        "image",
        _corpus(image=[0.5] * 36, image_emb=None),
    ),
    Case("score-duplicate-keys", [*SCORE, "bad.parquet"], "unique", _corpus(key=["same"] * 36)),
    # embeddings
    Case(
        "score-precomputed-without-embeddings",
        [*SCORE, "bad.parquet"],
        "emb",
        _corpus(image_emb=None, image=["x.jpg"] * 36),
    ),
    Case(
        "score-ragged-embeddings",
        [*SCORE, "bad.parquet"],
        "emb",
        _corpus(
            image_emb=pa.array(
                [[0.1] * (DIM if i % 2 else DIM - 1) for i in range(36)], pa.list_(pa.float32())
            )
        ),
    ),
    Case(
        "score-embeddings-of-strings",
        [*SCORE, "bad.parquet"],
        "emb",
        _corpus(text_emb=pa.array([["a"] * DIM] * 36)),
    ),
    # parameters
    Case("score-unknown-method", ["score", GOOD, "--method", "magic"], "magic"),
    Case("score-unknown-param", [*SCORE, GOOD, "--param", "nope=1"], "nope"),
    Case("score-param-out-of-range", [*SCORE, GOOD, "--method", "ncr", "--param", "epochs=0"], "epochs"),
    Case("score-param-without-value", [*SCORE, GOOD, "--param", "epochs"], "name=value"),
    Case("score-unknown-encoder", ["score", GOOD, "--encoder", "clip9000"], "clip9000"),
    Case("score-cuda-without-gpu", [*SCORE, GOOD, "--device", "cuda"], "cuda"),
    Case("score-rematch-mass-above-one", [*SCORE, GOOD, "--rematch", "--rematch-mass", "2"], "mass"),
    Case("score-option-not-a-number", [*SCORE, GOOD, "--seed", "abc"], "seed"),
    Case("score-unknown-option", [*SCORE, GOOD, "--frobnicate"], "frobnicate"),
    # trusted sets
    Case(
        "score-mscn-without-trusted-set",
        ["score", GOOD, "--encoder", "precomputed", "--method", "mscn"],
        "trusted",
    ),
    Case(
        "score-meta-keys-missing",
        ["score", GOOD, "--encoder", "precomputed", "--method", "mscn", "--meta-keys", "keys.txt"],
        "keys.txt",
    ),
    Case(
        "score-output-over-trusted-set",
        [
            "score",
            GOOD,
            "--encoder",
            "precomputed",
            "--method",
            "mscn",
            "--meta",
            "trusted.parquet",
            "-o",
            "trusted.parquet",
        ],
        "overwrite",
        lambda f: write(embedded_table(seed=1), f / "trusted.parquet"),
    ),
    # output paths
    Case("score-output-is-input", [*SCORE, GOOD, "-o", GOOD], "overwrite"),
    Case("score-output-parent-is-file", [*SCORE, GOOD, "-o", "afile/out.parquet"], "afile", _parent_is_file),
    Case("score-output-is-folder", [*SCORE, GOOD, "-o", "adir"], "adir", _existing_dir),
    # info
    Case("info-missing-file", ["info", "missing.parquet"], "no such file"),
    Case("info-not-parquet", ["info", "notes.txt"], "notes.txt", _file("notes.txt", "hello")),
    Case("info-plain-parquet", ["info", GOOD], "scores"),
    Case("info-metadata-not-json", ["info", "bad-scores.parquet"], "json", _scores_with_metadata(b"{oops")),
    Case(
        "info-metadata-lacks-fields",
        ["info", "bad-scores.parquet"],
        "lacks",
        _scores_with_metadata(json.dumps({"method": "ncr"}).encode()),
    ),
    Case("info-truth-column-absent", ["info", "scores.parquet", "--truth", "nope"], "nope"),
    # filter
    Case("filter-missing-file", ["filter", "missing.parquet", "-o", "kept.parquet"], "no such file"),
    Case("filter-plain-parquet", ["filter", GOOD, "-o", "kept.parquet"], "scores"),
    Case("filter-output-is-input", ["filter", "scores.parquet", "-o", "scores.parquet"], "overwrite"),
    Case(
        "filter-rejected-is-output",
        ["filter", "scores.parquet", "-o", "kept.parquet", "--rejected", "kept.parquet"],
        "different",
    ),
    Case(
        "filter-threshold-above-one",
        ["filter", "scores.parquet", "-o", "kept.parquet", "--thresh", "1.5"],
        "thresh",
    ),
    # export
    Case("export-into-foreign-folder", ["export", "scores.parquet", "-o", "out"], "out", _foreign_folder),
    Case("export-unknown-format", ["export", "scores.parquet", "-o", "exp", "--format", "zip"], "zip"),
    Case("export-zero-shard-rows", ["export", "scores.parquet", "-o", "exp", "--shard-rows", "0"], "shard"),
    Case("export-plain-parquet", ["export", GOOD, "-o", "exp"], "scores"),
    Case("export-output-is-input-folder", ["export", "scores.parquet", "-o", "."], "overwrite"),
    # train / eval / search
    Case("train-missing-file", ["train", "missing.parquet", "-o", "m2"], "no such file"),
    Case("train-keeps-nothing", ["train", "scores.parquet", "-o", "m2", "--thresh", "1.0"], "pair"),
    Case("train-into-foreign-folder", ["train", "scores.parquet", "-o", "out"], "out", _foreign_folder),
    Case("eval-missing-model", ["eval", "nomodel", GOOD], "nomodel"),
    Case("eval-model-json-corrupt", ["eval", "bad-model", GOOD], "model.json", _model_damaged("json")),
    Case("eval-model-json-missing", ["eval", "bad-model", GOOD], "model", _model_damaged("no-json")),
    Case("eval-heads-need-pickle", ["eval", "bad-model", GOOD], "bad-model", _model_damaged("pickle")),
    Case("eval-heads-missing", ["eval", "bad-model", GOOD], "bad-model", _model_damaged("no-heads")),
    Case("eval-corpus-missing", ["eval", "model", "missing.parquet"], "no such file"),
    Case("search-no-query", ["search", "model"], "--text"),
    # the model's encoder is `precomputed`: a query it cannot embed is refused before any work
    Case("search-image-with-precomputed-model", ["search", "model", "--image", "nope.jpg"], "precomputed"),
    Case("search-k-zero", ["search", "model", "--text", "a dog", "-k", "0"], "k"),
    # bench and demo-corpus
    Case(
        "bench-bad-noise-spec",
        ["bench", GOOD, "--encoder", "precomputed", "-o", "res", "--noise", "shuffle:2"],
        "noise",
    ),
    Case(
        "bench-unknown-method",
        ["bench", GOOD, "--encoder", "precomputed", "-o", "res", "--methods", "magic"],
        "magic",
    ),
    Case("bench-bad-seeds", ["bench", GOOD, "--encoder", "precomputed", "-o", "res", "--seeds", "x"], "seed"),
    Case("demo-corpus-one-image", ["demo-corpus", "demo", "--images", "1"], "images"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case: Case, ready: Path, tmp_path: Path):
    folder = tmp_path / "w"
    shutil.copytree(ready, folder)
    if case.setup is not None:
        case.setup(folder)
    before = snapshot(folder)
    done = run_cli(*case.args, cwd=folder)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, f"exit {done.returncode}\n{done.stderr}"
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert case.expect.lower() in lines[0].lower(), lines[0]
    assert snapshot(folder) == before


def test_enough_cases():
    assert len(CASES) >= 40


# Faults of single rows: the run goes on, every row is kept, the row says why it was not scored.


def _image_corpus(folder: Path) -> Path:
    """Eight little pictures (32 or 64 pixels square), two captions each, and a row per bad image."""
    (folder / "img").mkdir()
    rows = []
    for i in range(8):
        side = 32 if i % 2 == 0 else 64
        Image.new("RGB", (side, side), (30 * i, 255 - 30 * i, 90)).save(folder / "img" / f"{i}.jpg")
        rows += [(f"ok{i}-{c}", f"img/{i}.jpg", f"a picture in colour {i}", f"p{i}") for c in range(2)]
    huge_png(folder / "img" / "huge.png")
    (folder / "img" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    rows += [
        ("huge", "img/huge.png", "a grey field", "huge"),
        ("broken", "img/broken.jpg", "a broken file", "broken"),
        ("missing", "img/nowhere.jpg", "a lost file", "missing"),
        ("blank", "img/0.jpg", "", "blank"),
    ]
    table = pa.table(
        {name: [r[i] for r in rows] for i, name in enumerate(("key", "image", "caption", "image_id"))}
    )
    return write(table, folder / "pairs.parquet")


def test_faulty_rows_get_a_status_and_the_rest_is_scored(tmp_path: Path):
    corpus = _image_corpus(tmp_path)
    done = run_cli(
        "score",
        corpus,
        "--method",
        "similarity",
        "-o",
        "scores.parquet",
        "--cache-dir",
        tmp_path / "cache",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    table = pq.read_table(tmp_path / "scores.parquet").to_pydict()
    status = dict(zip(table["key"], table["cp_status"], strict=True))
    assert len(status) == 20
    assert status["huge"].startswith("image too large (225000000 pixels")
    assert status["broken"] != "ok" and status["missing"] != "ok" and status["blank"] != "ok"
    assert all(status[f"ok{i}-{c}"] == "ok" for i in range(8) for c in range(2))
    scored = [p for p, s in zip(table["cp_p_clean"], table["cp_status"], strict=True) if s == "ok"]
    assert len(scored) == 16 and all(p is not None for p in scored)


def test_the_pixel_limit_is_the_users(tmp_path: Path):
    corpus = _image_corpus(tmp_path)
    done = run_cli(
        "score",
        corpus,
        "--method",
        "similarity",
        "-o",
        "scores.parquet",
        "--max-image-pixels",
        "2000",
        "--cache-dir",
        tmp_path / "cache",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    status = pq.read_table(tmp_path / "scores.parquet").column("cp_status").to_pylist()
    # 64 x 64 = 4096 pixels is above 2000, 32 x 32 = 1024 is not: the four larger pictures (two
    # captions each) and the bomb are refused, the four smaller ones scored.
    assert sum(s.startswith("image too large") for s in status) == 9
    assert status.count("ok") == 8


def test_nan_or_inf_embeddings_are_a_row_status(tmp_path: Path):
    table = embedded_table()
    images = np.array(table.column("image_emb").to_pylist(), dtype=np.float32)
    texts = np.array(table.column("text_emb").to_pylist(), dtype=np.float32)
    images[0, 0] = np.nan
    texts[5, 3] = np.inf
    table = table.set_column(3, "image_emb", pa.array(images.tolist(), pa.list_(pa.float32())))
    table = table.set_column(4, "text_emb", pa.array(texts.tolist(), pa.list_(pa.float32())))
    write(table, tmp_path / "nan.parquet")
    done = run_cli(*SCORE, "nan.parquet", "-o", "scores.parquet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    status = pq.read_table(tmp_path / "scores.parquet").column("cp_status").to_pylist()
    assert len(status) == table.num_rows
    assert status[0] == status[5] == "embedding has NaN or inf"
    assert status.count("ok") == table.num_rows - 2
