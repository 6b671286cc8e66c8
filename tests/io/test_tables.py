import json

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from cleanpairs.errors import InputError
from cleanpairs.io.tables import ImageFolders, read_pairs

ROWS = {"key": ["a", "b", "c"], "image": ["x.jpg", "/abs/y.jpg", "sub/z.jpg"], "caption": ["1", "2", "3"]}


def test_parquet_relative_paths_resolve_against_the_table_folder(tmp_path):
    pq.write_table(pa.table(ROWS), tmp_path / "t.parquet")
    corpus = read_pairs(tmp_path / "t.parquet")
    assert corpus.image_refs() == [str(tmp_path / "x.jpg"), "/abs/y.jpg", str(tmp_path / "sub/z.jpg")]
    assert corpus.keys().to_pylist() == ["a", "b", "c"]


def test_csv_and_jsonl_read_the_same_rows(tmp_path):
    pcsv.write_csv(pa.table(ROWS), tmp_path / "t.csv")
    (tmp_path / "t.jsonl").write_text(
        "\n".join(json.dumps(dict(zip(ROWS, row, strict=True))) for row in zip(*ROWS.values(), strict=True))
    )
    for name in ("t.csv", "t.jsonl"):
        assert read_pairs(tmp_path / name).captions() == ["1", "2", "3"]


def test_folder_of_shards_and_glob_keep_order(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    pq.write_table(pa.table({k: v[:2] for k, v in ROWS.items()}), shards / "part-0.parquet")
    pq.write_table(pa.table({k: v[2:] for k, v in ROWS.items()}), shards / "part-1.parquet")
    assert read_pairs(shards).keys().to_pylist() == ["a", "b", "c"]
    assert len(read_pairs(str(shards / "part-*.parquet"))) == 3


def test_role_overrides(tmp_path):
    pq.write_table(
        pa.table({"pid": [1, 2], "file": ["a.jpg", "b.jpg"], "alt": ["x", "y"]}), tmp_path / "t.parquet"
    )
    corpus = read_pairs(tmp_path / "t.parquet", key_col="pid", image_col="file", text_col="alt")
    assert corpus.captions() == ["x", "y"]
    assert corpus.keys().to_pylist() == [1, 2]


def test_image_bytes_pass_through(tmp_path):
    pq.write_table(pa.table({"image": [b"\x01\x02"], "caption": ["c"]}), tmp_path / "t.parquet")
    assert read_pairs(tmp_path / "t.parquet").image_refs() == [b"\x01\x02"]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (pa.table({"image": pa.array([], pa.string()), "caption": pa.array([], pa.string())}), "zero rows"),
        (pa.table({"key": ["a", "a"], "image": ["x", "y"], "caption": ["1", "2"]}), "repeats 1 keys .*'a'"),
        (pa.table({"image": ["x"], "words": ["1"]}), "no caption column .* columns present: image, words"),
        (pa.table({"image": [1], "caption": ["1"]}), "'image' .* must be string path or bytes"),
    ],
)
def test_bad_tables_are_refused(tmp_path, table, message):
    pq.write_table(table, tmp_path / "t.parquet")
    with pytest.raises(InputError, match=message):
        read_pairs(tmp_path / "t.parquet")


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        read_pairs(tmp_path / "nope.parquet")
    (tmp_path / "t.txt").write_text("x")
    with pytest.raises(InputError, match="expected a .parquet, .csv, .jsonl or .tar"):
        read_pairs(tmp_path / "t.txt")


def test_corrupt_parquet_is_one_clear_error(tmp_path):
    (tmp_path / "t.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(InputError, match="cannot read .*t.parquet"):
        read_pairs(tmp_path / "t.parquet")


def test_shards_with_different_schemas_are_refused(tmp_path):
    pq.write_table(pa.table({"image": ["a"], "caption": ["x"]}), tmp_path / "0.parquet")
    pq.write_table(pa.table({"image": ["a"], "text": ["x"]}), tmp_path / "1.parquet")
    with pytest.raises(InputError, match="must share one schema"):
        read_pairs(tmp_path)


def test_a_glob_over_two_folders_resolves_each_row_against_its_own_folder(tmp_path):
    for name, keys in (("a", ["a0", "a1"]), ("b", ["b0"])):
        (tmp_path / name).mkdir()
        table = pa.table(
            {"key": keys, "image": ["images/0.jpg", "images/1.jpg"][: len(keys)], "caption": keys}
        )
        pq.write_table(table, tmp_path / name / "pairs.parquet")
    corpus = read_pairs(str(tmp_path / "*" / "pairs.parquet"))
    assert corpus.image_refs() == [
        str(tmp_path / "a" / "images/0.jpg"),
        str(tmp_path / "a" / "images/1.jpg"),
        str(tmp_path / "b" / "images/0.jpg"),
    ]
    assert corpus.folders().to_metadata() == {
        "image_folders": [str(tmp_path / "a"), str(tmp_path / "b")],
        "source_rows": [2, 1],
    }


def test_image_folders_from_a_scores_files_metadata(tmp_path):
    recorded = {"image_folders": ["/a", "/b"], "source_rows": [2, 1]}
    folders = ImageFolders.from_metadata(recorded, 3, "s.parquet")
    runs = folders.index(0, 3)
    assert folders.resolve(["x.jpg", "/abs.jpg", "x.jpg"], runs) == ["/a/x.jpg", "/abs.jpg", "/b/x.jpg"]
    assert folders.index(2, 1).tolist() == [1]
    # Written before the folders were recorded: one base for every row.
    old = ImageFolders.from_metadata({"image_base": "/a"}, 3, "s.parquet")
    assert old.resolve(["x.jpg"] * 3, old.index(0, 3)) == ["/a/x.jpg"] * 3


def test_metadata_that_does_not_describe_the_rows_fails_only_on_a_relative_path(tmp_path):
    folders = ImageFolders.from_metadata(
        {"image_folders": ["/a", "/b"], "source_rows": [2, 1]}, 5, "s.parquet"
    )
    assert folders.resolve(["/abs.jpg", b"\xff", None], folders.index(0, 3)) == ["/abs.jpg", b"\xff", None]
    with pytest.raises(
        InputError, match=r"s\.parquet has 5 rows but its metadata places 3 rows in 2 image folders"
    ):
        folders.resolve(["x.jpg"], folders.index(0, 1))
    # One folder for every row: no doubt where a path resolves, whatever the count.
    same = ImageFolders.from_metadata({"image_folders": ["/a", "/a"], "source_rows": [2, 1]}, 5, "s.parquet")
    assert same.resolve(["x.jpg"], same.index(4, 1)) == ["/a/x.jpg"]
