"""Exports keep identity and provenance, and read back with webdataset, pandas, polars, datasets."""

from __future__ import annotations

import json
import os

import datasets
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds

from cleanpairs.demo import make_demo_corpus
from cleanpairs.errors import InputError
from cleanpairs.io.export import export_scores
from cleanpairs.io.keeplist import UID_DTYPE, array_to_uids
from cleanpairs.io.scores import filter_scores
from cleanpairs.io.tables import write_image_corpus
from cleanpairs.pipeline import score_corpus
from cleanpairs.schema import P_CLEAN
from tests.io.ecosystem import uid_of


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """120 drawn pairs (relative image paths, keys like '7#1' that are not file names, a uid
    column, embeddings that match for 70% of pairs), scored with --encoder precomputed."""
    folder = tmp_path_factory.mktemp("corpus")
    demo = make_demo_corpus(60, 2, 0.0, 0)
    rng = np.random.default_rng(0)
    ids = list(dict.fromkeys(demo.image_ids))
    position = np.array([ids.index(i) for i in demo.image_ids])
    images = rng.normal(size=(60, 16))[position]
    texts = images + 0.3 * rng.normal(size=(120, 16))
    texts[:36] = rng.normal(size=(36, 16))  # 30% mismatched
    keys = [f"{iid}#{i % 2}" for i, iid in enumerate(demo.image_ids)]
    table = pa.table(
        {
            "key": keys,
            "uid": [uid_of(k) for k in keys],
            "caption": demo.captions,
            "image_emb": [row.tolist() for row in images],
            "text_emb": [t.tolist() for t in texts],
        }
    )
    corpus = write_image_corpus(folder, demo.images, table)
    out = folder / "pairs.scores.parquet"
    score_corpus(corpus, out, method="similarity", encoder="precomputed", device="cpu", progress=False)
    kept = pq.read_table(out).filter(pa.compute.greater_equal(pq.read_table(out).column(P_CLEAN), 0.5))
    assert 0 < kept.num_rows < 120
    return out, kept


def test_webdataset_keys_are_the_corpus_keys_made_safe(scored, tmp_path):
    scores, kept = scored
    export_scores(scores, tmp_path / "wds", format="webdataset", shard_rows=50)
    tars = sorted(str(p) for p in (tmp_path / "wds").glob("*.tar"))
    samples = list(wds.WebDataset(tars, shardshuffle=False))
    assert len(samples) == kept.num_rows
    keys = [s["__key__"] for s in samples]
    originals = [json.loads(s["json"])["source_key"] for s in samples]
    assert originals == kept.column("key").to_pylist()
    assert len(set(keys)) == len(keys) and all("#" not in k and "." not in k for k in keys)
    assert all(k.startswith(o.replace("#", "_")) for k, o in zip(keys, originals, strict=True))


def test_every_export_records_threshold_counts_and_source(scored, tmp_path):
    scores, kept = scored
    export_scores(scores, tmp_path / "pq", format="parquet", thresh=0.5)
    manifest = json.loads((tmp_path / "pq" / "_cleanpairs.json").read_text())
    assert manifest["threshold"] == 0.5 and manifest["rows"] == kept.num_rows
    assert manifest["source"] == os.path.abspath(scores)
    assert manifest["scores_run"]["method"] == "similarity"


def test_a_parquet_export_reads_back_everywhere_and_scores_again_from_elsewhere(
    scored, tmp_path, monkeypatch
):
    scores, kept = scored
    export_scores(scores, tmp_path / "pq", format="parquet", shard_rows=40)
    shards = sorted(str(p) for p in (tmp_path / "pq").glob("part-*.parquet"))
    want = kept.column("key").to_pylist()
    assert pd.concat([pd.read_parquet(s) for s in shards])["key"].tolist() == want
    assert pl.concat([pl.read_parquet(s) for s in shards])["key"].to_list() == want
    assert datasets.Dataset.from_parquet(shards)["key"] == want
    images = pq.read_table(shards[0]).column("image").to_pylist()
    assert all(os.path.isabs(p) and os.path.isfile(p) for p in images)
    monkeypatch.chdir(tmp_path)  # the export is scored from another folder, by its folder name
    again = score_corpus(
        "pq", tmp_path / "again.parquet", method="similarity", encoder="offline",
        cache_dir=tmp_path / "cache", device="cpu", progress=False,
    )
    assert again.meta.scored_rows == kept.num_rows


def test_uids_keep_list_is_datacomps_npy(scored, tmp_path):
    scores, kept = scored
    counts = export_scores(scores, tmp_path / "keep.npy", format="uids")
    array = np.load(tmp_path / "keep.npy")
    assert array.dtype == UID_DTYPE and counts.rows == kept.num_rows
    assert np.array_equal(array, np.sort(array))  # sorted, as DataComp's resharder expects
    assert array_to_uids(array) == sorted(kept.column("uid").to_pylist())


def test_uids_keep_list_as_text_and_other_names_refused(scored, tmp_path):
    scores, kept = scored
    export_scores(scores, tmp_path / "keep.txt", format="uids")
    assert (tmp_path / "keep.txt").read_text().splitlines() == kept.column("key").to_pylist()
    with pytest.raises(InputError, match=r"writes a \.npy .* or a \.txt of keys; got keep\.csv"):
        export_scores(scores, tmp_path / "keep.csv", format="uids")
    assert not (tmp_path / "keep.csv").exists()


def test_filter_refuses_an_output_that_is_not_parquet(scored, tmp_path):
    scores, _ = scored
    with pytest.raises(InputError, match=r"must end in \.parquet; got kept\.npy .*--format uids"):
        filter_scores(scores, tmp_path / "kept.npy", thresh=0.5)
    assert not (tmp_path / "kept.npy").exists()


def test_a_webdataset_export_reads_back_as_a_corpus(scored, tmp_path):
    from cleanpairs.io.tables import read_pairs

    scores, kept = scored
    export_scores(scores, tmp_path / "wds", format="webdataset", shard_rows=50)
    corpus = read_pairs(tmp_path / "wds")  # the tars; 0000N.parquet beside them are their sidecars
    assert len(corpus) == kept.num_rows
    assert corpus.table.column("source_key").to_pylist() == kept.column("key").to_pylist()
    assert corpus.captions() == kept.column("caption").to_pylist()
    assert all(isinstance(image, bytes) for image in corpus.image_refs())
