"""The command on the ecosystem's corpora: tar shards, clip-retrieval folders, URL-only tables,
keep-lists; refusals are one line and write nothing."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cleanpairs.cli.main import app
from cleanpairs.io.keeplist import UID_DTYPE
from tests.io.ecosystem import flickr_pairs, write_clip_retrieval, write_tar_shard

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def refused(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


@pytest.fixture(scope="module")
def scored_shards(tmp_path_factory, cache_dir):
    """Two tar shards of real Flickr8k pairs (12 photos, 60 pairs) scored by brace range."""
    folder = tmp_path_factory.mktemp("wds")
    rows = flickr_pairs(12, offset=200)
    write_tar_shard(folder / "00000.tar", rows[:30])
    write_tar_shard(folder / "00001.tar", rows[30:])
    out = folder.parent / "wds.scores.parquet"
    result = invoke(
        "score", f"{folder}/{{00000..00001}}.tar", "-o", out, "--method", "similarity",
        "--cache-dir", cache_dir, "--device", "cpu",
    )
    assert result.exit_code == 0, result.output
    return folder, out, rows, result.stdout


def test_score_reads_tar_shards_and_prints_the_roles_once(scored_shards):
    _, out, rows, stdout = scored_shards
    assert stdout.count("columns: ") == 1
    assert "columns: key=key, image=image, caption=caption" in stdout
    assert "scored 60 of 60 rows with similarity on offline" in stdout
    table = pq.read_table(out)
    assert table.column("key").to_pylist() == [r["key"] for r in rows]
    assert table.column("uid").to_pylist() == [r["uid"] for r in rows]


def test_score_a_folder_of_tars_by_its_name(scored_shards, cache_dir, tmp_path):
    folder, _, _, _ = scored_shards
    result = invoke(
        "score", folder, "-o", tmp_path / "s.parquet", "--method", "similarity",
        "--cache-dir", cache_dir, "--device", "cpu",
    )
    assert result.exit_code == 0, result.output
    assert "encoded 0 images and 0 captions" in result.stdout  # all from the cache


def test_export_uids_writes_a_datacomp_keep_list(scored_shards, tmp_path):
    _, out, _, _ = scored_shards
    result = invoke("export", out, "--format", "uids", "-o", tmp_path / "keep.npy")
    assert result.exit_code == 0, result.output
    kept = pq.read_table(out).filter(pa.compute.greater_equal(pq.read_table(out).column("cp_p_clean"), 0.5))
    array = np.load(tmp_path / "keep.npy")
    assert array.dtype == UID_DTYPE and len(array) == kept.num_rows
    assert f"wrote the keys of {kept.num_rows} kept pairs" in result.stdout


def test_filter_to_a_name_that_is_not_parquet_is_refused(scored_shards, tmp_path):
    _, out, _, _ = scored_shards
    refused(invoke("filter", out, "-o", tmp_path / "kept.npy"), "must end in .parquet; got kept.npy")
    assert not (tmp_path / "kept.npy").exists()


def test_a_corpus_of_urls_says_why_nothing_was_scored(tmp_path):
    table = pa.table({"URL": [f"https://example.org/{i}.jpg" for i in range(200)], "TEXT": ["a cat"] * 200})
    pq.write_table(table, tmp_path / "laion.parquet")
    result = invoke("score", tmp_path / "laion.parquet", "--cache-dir", tmp_path / "cache", "--device", "cpu")
    refused(result, "no row could be scored: 200 x image is a URL; download the corpus first")
    assert not (tmp_path / "laion.scores.parquet").exists()


def test_score_a_clip_retrieval_folder_with_precomputed_embeddings(tmp_path):
    write_clip_retrieval(tmp_path / "emb", [60, 60])
    result = invoke(
        "score", tmp_path / "emb", "--encoder", "precomputed", "--method", "similarity", "--device", "cpu"
    )
    assert result.exit_code == 0, result.output
    assert "scored 120 of 120 rows" in result.stdout
    assert "image_emb=image_emb, text_emb=text_emb" in result.stdout
    assert pq.read_table(tmp_path / "emb.scores.parquet").num_rows == 120


def test_short_help_works_on_every_command():
    for command in ("score", "filter", "export"):
        result = invoke(command, "-h")
        assert result.exit_code == 0 and "--help" in result.stdout


def test_a_brace_range_needs_an_explicit_output(scored_shards):
    folder, _, _, _ = scored_shards
    refused(invoke("score", f"{folder}/{{00000..00001}}.tar"), "brace-range input needs an explicit output")


def test_a_single_tar_is_scored_beside_itself_by_default():
    from cleanpairs.pipeline import default_output

    assert default_output("shards/00003.tar").as_posix() == "shards/00003.scores.parquet"
    assert default_output("shards/00003.tar.gz").as_posix() == "shards/00003.scores.parquet"
