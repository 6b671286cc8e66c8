import hashlib
import json
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image

from cleanpairs.errors import InputError
from cleanpairs.io.export import export_scores
from cleanpairs.io.scores import filter_scores, read_run_metadata, write_scores
from cleanpairs.schema import P_CLEAN, SIMILARITY, output_fields
from tests.conftest import run_metadata


@pytest.fixture
def scores_file(tmp_path):
    """Five pairs with real picture files (one PNG), three of them above 0.5."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    names = []
    for i in range(5):
        name = f"img{i}.png" if i == 0 else f"img{i}.jpg"
        Image.new("RGB", (32, 24), (50 * i, 0, 0)).save(folder / name)
        names.append(name)
    table = pa.table(
        {"key": [f"k{i}" for i in range(5)], "image": names, "caption": [f"caption {i}" for i in range(5)]}
    )
    columns = {f.name: pa.nulls(5, f.type) for f in output_fields(pa.string())}
    columns[P_CLEAN] = pa.array([0.9, 0.2, 0.7, 0.6, 0.1], pa.float32())
    columns[SIMILARITY] = pa.array([0.5] * 5, pa.float32())
    columns["cp_status"] = pa.array(["ok"] * 5)
    meta = run_metadata(
        5,
        {"key": "key", "image": "image", "caption": "caption"},
        input=[str(folder / "pairs.parquet")],
        estimated_noise_rate=0.4,
        extra={"image_base": str(folder)},
    )
    path = tmp_path / "scores.parquet"
    write_scores(table, columns, meta, path)
    return path


def test_parquet_export_shards_the_kept_rows(scores_file, tmp_path):
    counts = export_scores(scores_file, tmp_path / "out", format="parquet", thresh=0.5, shard_rows=2)
    assert (counts.rows, counts.shards) == (3, 2)
    shards = sorted((tmp_path / "out").glob("part-*.parquet"))
    assert [pq.read_table(s).num_rows for s in shards] == [2, 1]
    keys = pa.concat_tables([pq.read_table(s) for s in shards]).column("key").to_pylist()
    assert keys == ["k0", "k2", "k3"]


def test_webdataset_export_reads_back_with_webdataset(scores_file, tmp_path):
    counts = export_scores(scores_file, tmp_path / "wds", format="webdataset", thresh=0.5, shard_rows=2)
    assert (counts.rows, counts.shards, counts.failed) == (3, 2, 0)
    out = tmp_path / "wds"
    assert sorted(p.name for p in out.iterdir()) == [
        "00000.parquet",
        "00000.tar",
        "00000_stats.json",
        "00001.parquet",
        "00001.tar",
        "00001_stats.json",
        "_cleanpairs.json",
    ]
    urls = [str(out / "00000.tar"), str(out / "00001.tar")]
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode("pil"))
    assert [s["__key__"] for s in samples] == ["k0", "k2", "k3"]
    assert [s["txt"] for s in samples] == ["caption 0", "caption 2", "caption 3"]
    assert [s["json"]["source_key"] for s in samples] == ["k0", "k2", "k3"]
    assert all(isinstance(s["jpg"], Image.Image) and s["jpg"].size == (32, 24) for s in samples)
    assert np.allclose([s["json"][P_CLEAN] for s in samples], [0.9, 0.7, 0.6])
    assert json.loads((out / "00000_stats.json").read_text())["successes"] == 2
    assert pq.read_table(out / "00001.parquet").column("key").to_pylist() == ["k3"]


def test_export_rejects_unknown_format_and_input_as_output(scores_file, tmp_path):
    with pytest.raises(InputError, match="--format must be one of parquet, webdataset"):
        export_scores(scores_file, tmp_path / "o", format="zip")
    with pytest.raises(InputError, match="would overwrite the input"):
        export_scores(scores_file, scores_file, format="parquet")
    assert not (tmp_path / "o").exists()


def test_export_into_a_folder_of_other_files_is_refused_and_nothing_is_touched(scores_file, tmp_path):
    out = tmp_path / "mine"
    (out / "sub").mkdir(parents=True)
    (out / "important.txt").write_text("keep me")
    (out / "sub" / "notes.txt").write_text("me too")
    with pytest.raises(
        InputError, match=r"mine already holds files that no cleanpairs export wrote \(important\.txt, sub\)"
    ):
        export_scores(scores_file, out, format="parquet")
    assert (out / "important.txt").read_text() == "keep me"
    assert (out / "sub" / "notes.txt").read_text() == "me too"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_an_export_replaces_an_earlier_export_and_says_what_it_wrote(scores_file, tmp_path):
    out = tmp_path / "out"
    export_scores(scores_file, out, format="webdataset", shard_rows=2)
    counts = export_scores(scores_file, out, format="parquet", thresh=0.65, shard_rows=10)
    assert sorted(p.name for p in out.iterdir()) == ["_cleanpairs.json", "part-00000.parquet"]
    manifest = json.loads((out / "_cleanpairs.json").read_text())
    assert manifest["files"] == ["part-00000.parquet"]
    assert (manifest["export_format"], manifest["threshold"], manifest["rows"], manifest["shards"]) == (
        "parquet",
        0.65,
        counts.rows,
        1,
    )
    assert manifest["source"] == str(scores_file)
    assert manifest["scores_run"]["method"] == "similarity"
    # A file added by hand makes it more than an export: refused from then on.
    (out / "mine.txt").write_text("x")
    with pytest.raises(InputError, match=r"\(mine\.txt\)"):
        export_scores(scores_file, out, format="parquet")


def two_folder_scores(tmp_path):
    """A scores file of rows from two folders whose images share relative names, with the
    folders in its metadata as `score` writes them; and each key's picture bytes."""
    table = pa.table({"key": ["a0", "a1", "b0", "b1"], "image": ["images/0.jpg", "images/1.jpg"] * 2})
    table = table.append_column("caption", pa.array(["a zero", "a one", "b zero", "b one"]))
    expected = {}
    for i, key in enumerate(table.column("key").to_pylist()):
        path = tmp_path / key[0] / "images" / f"{key[1]}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), (60 * i, 200 - 40 * i, 7)).save(path, format="JPEG")
        expected[key] = hashlib.md5(path.read_bytes()).hexdigest()
    columns = {f.name: pa.nulls(4, f.type) for f in output_fields(pa.string())}
    columns[P_CLEAN] = pa.array([0.9, 0.8, 0.7, 0.6], pa.float32())
    columns[SIMILARITY] = pa.array([0.5] * 4, pa.float32())
    columns["cp_status"] = pa.array(["ok"] * 4)
    extra = {"image_folders": [str(tmp_path / "a"), str(tmp_path / "b")], "source_rows": [2, 2]}
    meta = run_metadata(4, {"key": "key", "image": "image", "caption": "caption"}, extra=extra)
    write_scores(table, columns, meta, tmp_path / "scores.parquet")
    return tmp_path / "scores.parquet", expected


def exported_images(folder) -> dict[str, str]:
    """The md5 of each exported picture, by its corpus key."""
    found = {}
    for shard in sorted(folder.glob("*.tar")):
        with tarfile.open(shard) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        for name, data in members.items():
            if name.endswith(".json"):
                jpg = members[name.replace(".json", ".jpg")]
                found[json.loads(data)["source_key"]] = hashlib.md5(jpg).hexdigest()
    return found


def test_webdataset_export_reads_each_rows_picture_from_its_own_folder(tmp_path):
    scores, expected = two_folder_scores(tmp_path)
    export_scores(scores, tmp_path / "wds", format="webdataset", shard_rows=3)
    assert exported_images(tmp_path / "wds") == expected
    # The parquet shards record the folders of their own rows, so they still resolve.
    export_scores(scores, tmp_path / "pq", format="parquet", shard_rows=3)
    extras = [read_run_metadata(p).extra for p in sorted((tmp_path / "pq").glob("part-*.parquet"))]
    assert [e["source_rows"] for e in extras] == [[2, 1], [0, 1]]


def test_filtered_scores_keep_each_rows_folder(tmp_path):
    scores, expected = two_folder_scores(tmp_path)
    filter_scores(scores, tmp_path / "kept.parquet", thresh=0.75, rejected=tmp_path / "rest.parquet")
    assert read_run_metadata(tmp_path / "kept.parquet").extra["source_rows"] == [2, 0]
    assert read_run_metadata(tmp_path / "rest.parquet").extra["source_rows"] == [0, 2]
    export_scores(tmp_path / "rest.parquet", tmp_path / "wds", format="webdataset", thresh=0.0)
    assert exported_images(tmp_path / "wds") == {k: v for k, v in expected.items() if k.startswith("b")}


def test_a_scores_file_changed_by_another_tool_is_answered_not_guessed(tmp_path):
    scores, _ = two_folder_scores(tmp_path)
    table = pq.read_table(scores)
    pq.write_table(table.slice(1), tmp_path / "edited.parquet")  # metadata still counts 4 rows
    counts = export_scores(tmp_path / "edited.parquet", tmp_path / "pq", format="parquet", thresh=0.0)
    assert counts.rows == 3
    with pytest.raises(
        InputError, match=r"edited\.parquet has 3 rows but its metadata places 4 rows in 2 image folders"
    ):
        export_scores(tmp_path / "edited.parquet", tmp_path / "wds", format="webdataset", thresh=0.0)
    assert not (tmp_path / "wds").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
