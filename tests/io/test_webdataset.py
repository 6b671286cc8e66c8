"""webdataset tar shards in img2dataset's layout read as the same corpus as parquet shards."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from cleanpairs.errors import InputError
from cleanpairs.io.tables import expand_braces, read_pairs
from tests.io.ecosystem import flickr_pairs, img2dataset_parquet, write_tar_shard


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Three tar shards of 20 real Flickr8k pairs each, with img2dataset's sidecar parquet."""
    folder = tmp_path_factory.mktemp("shards")
    rows = flickr_pairs(12)  # 60 pairs
    for n in range(3):
        write_tar_shard(folder / f"{n:05d}.tar", rows[20 * n : 20 * (n + 1)])
    return folder, rows


def test_a_tar_shard_reads_as_the_same_corpus_as_a_parquet_shard(shards, tmp_path):
    folder, rows = shards
    pq.write_table(img2dataset_parquet(rows[:20]), tmp_path / "00000.parquet")
    from_tar = read_pairs(folder / "00000.tar")
    from_parquet = read_pairs(tmp_path / "00000.parquet")
    assert len(from_tar) == len(from_parquet) == 20
    assert from_tar.roles.key == "key" and from_tar.roles.caption == "caption"
    assert from_tar.keys().to_pylist() == from_parquet.keys().to_pylist()
    assert from_tar.captions() == from_parquet.captions()
    assert from_tar.image_refs() == from_parquet.image_refs()  # the same jpeg bytes
    assert from_tar.table.column("uid").to_pylist() == [r["uid"] for r in rows[:20]]


@pytest.mark.parametrize("form", ["folder", "glob", "braces"])
def test_a_folder_a_glob_or_a_brace_range_reads_every_shard_in_order(shards, form):
    folder, rows = shards
    source = {
        "folder": folder,
        "glob": f"{folder}/*.tar",
        "braces": f"{folder}/{{00000..00002}}.tar",
    }[form]
    corpus = read_pairs(source)
    assert [p.name for p in corpus.sources] == ["00000.tar", "00001.tar", "00002.tar"]
    assert corpus.keys().to_pylist() == [r["key"] for r in rows]
    assert corpus.source_index.tolist() == [0] * 20 + [1] * 20 + [2] * 20


def test_brace_ranges_keep_zero_padding():
    assert expand_braces("s/{00008..00011}.tar") == [f"s/{n:05d}.tar" for n in range(8, 12)]
    assert expand_braces("a{1..2}b{0..1}") == ["a1b0", "a1b1", "a2b0", "a2b1"]
    assert expand_braces("plain.tar") == ["plain.tar"]


def test_a_brace_range_naming_missing_shards_is_refused(shards):
    folder, _ = shards
    with pytest.raises(InputError, match=r"^2 of the 5 files .* do not exist \(e\.g\. .*00003\.tar\)$"):
        read_pairs(f"{folder}/{{00000..00004}}.tar")


def test_a_folder_of_tars_and_unrelated_parquet_is_refused(shards, tmp_path):
    _, rows = shards
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    write_tar_shard(mixed / "00000.tar", rows[:5])  # its sidecar 00000.parquet is fine
    assert len(read_pairs(mixed)) == 5
    pq.write_table(img2dataset_parquet(rows[5:10]), mixed / "extra.parquet")
    with pytest.raises(InputError, match=r"both tar shards and parquet tables .*extra\.parquet.*\*\.tar"):
        read_pairs(mixed)


def test_samples_without_json_take_their_metadata_from_the_sidecar(tmp_path, shards):
    _, rows = shards
    import webdataset as wds

    with wds.TarWriter(str(tmp_path / "00000.tar")) as sink:
        for row in rows[:4]:
            sink.write({"__key__": row["key"], "jpg": row["jpg"], "txt": row["caption"]})
    pq.write_table(img2dataset_parquet(rows[:4]).drop_columns(["jpg"]), tmp_path / "00000.parquet")
    corpus = read_pairs(tmp_path / "00000.tar")
    assert corpus.table.column("uid").to_pylist() == [r["uid"] for r in rows[:4]]
    assert corpus.table.column("url").to_pylist() == [r["url"] for r in rows[:4]]


def test_a_file_that_is_not_a_tar_is_one_line(tmp_path):
    (tmp_path / "broken.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(InputError, match=r"cannot read .*broken\.tar as a tar shard"):
        read_pairs(tmp_path / "broken.tar")


def test_shards_without_captions_name_the_columns_they_hold(tmp_path, shards):
    _, rows = shards
    import webdataset as wds

    with wds.TarWriter(str(tmp_path / "00000.tar")) as sink:
        for row in rows[:3]:
            sink.write({"__key__": row["key"], "jpg": row["jpg"], "json": {"alt": row["caption"]}})
    with pytest.raises(InputError, match=r"no caption column found .*columns present: key, image, alt"):
        read_pairs(tmp_path / "00000.tar")
    assert read_pairs(tmp_path / "00000.tar", text_col="alt").captions() == [r["caption"] for r in rows[:3]]
