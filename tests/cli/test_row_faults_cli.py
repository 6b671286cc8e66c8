"""Faults in one row, in a file's metadata or in a model folder, met by the installed command:
a row that cannot be scored gets its reason in cp_status and the rest are scored; anything else
is one line on stderr starting `error:`, exit code 2, and nothing written."""

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from cleanpairs.io.scores import write_scores
from cleanpairs.retrieval import train_from_scores
from cleanpairs.schema import P_CLEAN, STATUS, output_fields
from tests.conftest import flickr_slice, read_only_copy, run_metadata, write_blank_png

CLI = Path(sys.executable).with_name("cleanpairs")
TOO_LARGE = "image too large (225000000 pixels, limit 89478485)"


def cleanpairs(*args):
    return subprocess.run([CLI, *map(str, args)], capture_output=True, text=True, timeout=600, check=False)


def assert_refused(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert all(f in lines[0] for f in fragments), lines[0]
    assert result.stdout == ""


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """3 real photos x 5 captions, and a 16th pair whose image is a 15,000 x 15,000 PNG."""
    folder = tmp_path_factory.mktemp("photos")
    write_blank_png(folder / "huge.png", 15_000, 15_000)
    table = flickr_slice(3, offset=100).select(["image", "caption", "image_id"])
    huge = pa.table(
        {"image": ["huge.png"], "caption": ["a black square"], "image_id": ["huge"]}, table.schema
    )
    pq.write_table(pa.concat_tables([table, huge]), folder / "pairs.parquet")
    return folder / "pairs.parquet"


@pytest.fixture(scope="module")
def scored(photos, cache_dir):
    out = photos.with_name("pairs.scores.parquet")
    result = cleanpairs(
        "score", photos, "-o", out, "--method", "similarity", "--cache-dir", cache_dir, "--device", "cpu"
    )
    return result, out


def test_score_gives_an_oversized_image_a_row_status_and_scores_the_rest(scored):
    result, out = scored
    assert result.returncode == 0, result.stderr
    assert "scored 15 of 16 rows" in result.stdout and f"not scored: 1 x {TOO_LARGE}" in result.stdout
    table = pq.read_table(out)
    assert table.column(STATUS).to_pylist() == ["ok"] * 15 + [TOO_LARGE]
    assert table.column(P_CLEAN).null_count == 1 and table.column(P_CLEAN)[15].as_py() is None


def test_export_to_webdataset_lists_an_oversized_image_as_failed_and_writes_the_rest(tmp_path):
    photo = flickr_slice(1, offset=100).column("image")[0].as_py()
    write_blank_png(tmp_path / "huge.png", 15_000, 15_000)
    table = pa.table({"key": ["photo", "huge"], "image": [photo, "huge.png"], "caption": ["a dog", "black"]})
    columns = {f.name: pa.nulls(2, f.type) for f in output_fields(pa.string())}
    columns[P_CLEAN] = pa.array([0.9, 0.9], pa.float32())
    columns[STATUS] = pa.array(["ok", "ok"])
    roles = {"key": "key", "image": "image", "caption": "caption"}
    meta = run_metadata(2, roles, extra={"image_base": str(tmp_path)})
    write_scores(table, columns, meta, tmp_path / "s.parquet")
    result = cleanpairs("export", tmp_path / "s.parquet", "--format", "webdataset", "-o", tmp_path / "shards")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "1 kept rows had unreadable images and were left out"
    records = pq.read_table(tmp_path / "shards" / "00000.parquet").to_pylist()
    assert [(r["source_key"], r["status"], r["error_message"]) for r in records] == [
        ("photo", "success", None),
        ("huge", "failed_to_read", TOO_LARGE),
    ]
    # Pillow's limit is the most a run may allow: cleanpairs never raises it for the process.
    again = cleanpairs(
        "export", tmp_path / "s.parquet", "--format", "webdataset", "-o", tmp_path / "more",
        "--max-image-pixels", 100_000_000,
    )  # fmt: skip
    assert_refused(again, "--max-image-pixels must be at most 89478485 (Pillow's decompression-bomb limit")
    assert not (tmp_path / "more").exists()


def test_nan_embeddings_are_a_row_status_and_ragged_ones_one_line(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(40, 8)).astype(np.float32)
    texts = images + 0.1 * rng.normal(size=(40, 8)).astype(np.float32)
    images[5, 1], texts[9, 0] = np.nan, np.inf
    table = pa.table(
        {"key": [f"k{i}" for i in range(40)], "image_emb": list(images), "text_emb": list(texts)}
    )
    pq.write_table(table, tmp_path / "nan.parquet")
    result = cleanpairs(
        "score", tmp_path / "nan.parquet", "--encoder", "precomputed", "--method", "similarity"
    )
    assert result.returncode == 0, result.stderr
    assert (
        "scored 38 of 40 rows" in result.stdout
        and "not scored: 2 x embedding has NaN or inf" in result.stdout
    )
    ragged = [row.tolist() for row in images]
    ragged[3] = ragged[3][:7]
    pq.write_table(table.set_column(1, "image_emb", pa.array(ragged)), tmp_path / "ragged.parquet")
    result = cleanpairs("score", tmp_path / "ragged.parquet", "--encoder", "precomputed")
    assert_refused(result, "column 'image_emb' holds vectors of different lengths (8 in row 0, 7 in row 3)")
    assert not (tmp_path / "ragged.scores.parquet").exists()


@pytest.fixture(scope="module")
def not_scores_files(scored, tmp_path_factory):
    """Files that are not scores files: damaged or missing metadata, or not parquet at all."""
    folder = tmp_path_factory.mktemp("not-scores")
    table = pq.read_table(scored[1])
    for name, metadata in (
        ("bad-json", {b"cleanpairs": b'{"method": "similarity",'}),
        ("lacks-fields", {b"cleanpairs": b'{"method": "similarity", "version": "0.1"}'}),
        ("no-metadata", {}),
    ):
        pq.write_table(table.replace_schema_metadata(metadata), folder / f"{name}.parquet")
    (folder / "not-parquet.parquet").write_text("key,caption\nk0,a dog\n")
    return folder


NOT_A_SCORES_FILE = {
    "bad-json": "bad-json.parquet is not a scores file: its 'cleanpairs' metadata is not valid JSON",
    "lacks-fields": "lacks-fields.parquet is not a scores file: its 'cleanpairs' metadata lacks fields "
    "params, encoder, seed, input, input_fingerprint, roles, rows, scored_rows, estimated_noise_rate",
    "no-metadata": "no-metadata.parquet is not a scores file: it has no 'cleanpairs' metadata",
    "not-parquet": "not-parquet.parquet as parquet: ",
}


@pytest.mark.parametrize(
    ("command", "kind"),
    [
        # Every command opens a scores file the same way; `filter` starts fastest, so it meets
        # every kind, and each other command one.
        ("filter", "bad-json"),
        ("filter", "lacks-fields"),
        ("filter", "no-metadata"),
        ("filter", "not-parquet"),
        ("info", "bad-json"),
        ("export", "lacks-fields"),
        ("train", "no-metadata"),
    ],
)
def test_a_file_that_is_not_a_scores_file_is_refused_in_one_line(not_scores_files, tmp_path, command, kind):
    output = ["-o", tmp_path / "out"] if command != "info" else []
    assert_refused(
        cleanpairs(command, not_scores_files / f"{kind}.parquet", *output), NOT_A_SCORES_FILE[kind]
    )
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def model(scored, cache_dir):
    """A retrieval model trained on the photos' scores (in this process: it is not what is tested)."""
    folder = scored[1].with_name("model")
    train_from_scores(
        scored[1], folder, thresh=0.0, epochs=1, cache_dir=cache_dir, device="cpu", progress=False
    )
    return folder


def test_search_refuses_an_oversized_query_image_before_indexing(model, photos, cache_dir):
    result = cleanpairs("search", model, "--image", photos.with_name("huge.png"), "--cache-dir", cache_dir)
    assert_refused(result, "cannot use ", f"huge.png as a query: {TOO_LARGE}")
    assert not (model / "index").exists()


def test_search_in_a_read_only_model_folder_builds_its_index_in_memory(model, scored, cache_dir, tmp_path):
    with read_only_copy(model, tmp_path / "ro") as frozen:
        result = cleanpairs(
            "search", frozen, "--text", "a dog runs", "--corpus", scored[1], "-k", 2,
            "--cache-dir", cache_dir, "--device", "cpu",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        note = result.stderr.strip()
        assert note.startswith(f"note: cannot write {frozen / 'index'}/") and note.endswith(
            f"{frozen} is on a read-only file system; searched with an index built in memory"
        )
        lines = result.stdout.splitlines()
        assert lines[0].startswith("2 nearest of 3 images in ") and lines[0].endswith(
            "(index built in memory, not saved)"
        )
        assert len(lines) == 3 and not (frozen / "index").exists()


def test_eval_names_a_head_a_weights_only_load_refuses_in_one_line(model, photos, tmp_path):
    damaged = shutil.copytree(model, tmp_path / "model")
    state = torch.load(damaged / "text_head.pt", weights_only=True)
    torch.save({**state, "extra": argparse.Namespace(a=1)}, damaged / "text_head.pt")
    result = cleanpairs("eval", damaged, photos)
    assert_refused(
        result, f"{damaged / 'text_head.pt'} is refused by a weights-only load: it holds argparse.Namespace"
    )
    assert sorted(p.name for p in damaged.iterdir()) == ["image_head.pt", "model.json", "text_head.pt"]


def test_search_names_a_corrupt_model_json_in_one_line(model, photos, tmp_path):
    damaged = shutil.copytree(model, tmp_path / "model")
    (damaged / "model.json").write_text('{"format": "cleanpairs-retrieval-model", "heads": ')
    result = cleanpairs("search", damaged, "--text", "a dog", "--corpus", photos)
    assert_refused(result, f"{damaged / 'model.json'} cannot be read as JSON (")
