"""The ecosystem's column names and layouts: LAION, img2dataset, DataComp, Hugging Face,
clip-retrieval; and the error when no row can be scored."""

from __future__ import annotations

import re

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cleanpairs.encoders.embed import embed_corpus
from cleanpairs.errors import InputError
from cleanpairs.io.tables import read_pairs
from cleanpairs.schema import resolve_roles
from tests.conftest import flickr_slice
from tests.io.ecosystem import flickr_pairs, img2dataset_parquet, write_clip_retrieval


def test_laion_casing_is_found():
    schema = pa.schema([("SAMPLE_ID", pa.int64()), ("URL", pa.string()), ("TEXT", pa.string())])
    roles = resolve_roles(schema)
    assert (roles.key, roles.image, roles.caption) == ("SAMPLE_ID", "URL", "TEXT")


def test_datacomp_names_are_found():
    roles = resolve_roles(pa.schema([("uid", pa.string()), ("url", pa.string()), ("text", pa.string())]))
    assert (roles.key, roles.image, roles.caption) == ("uid", "url", "text")


def test_overrides_match_case_insensitively_where_one_column_fits():
    schema = pa.schema([("Alt", pa.string()), ("Photo", pa.binary())])
    roles = resolve_roles(schema, image_col="photo", text_col="alt")
    assert (roles.image, roles.caption) == ("Photo", "Alt")


def test_img2dataset_parquet_uses_the_jpg_bytes_not_the_url(tmp_path):
    rows = flickr_pairs(2)
    pq.write_table(img2dataset_parquet(rows), tmp_path / "00000.parquet")
    corpus = read_pairs(tmp_path / "00000.parquet")
    assert (corpus.roles.key, corpus.roles.image, corpus.roles.caption) == ("key", "jpg", "caption")
    assert corpus.image_refs() == [r["jpg"] for r in rows]


@pytest.mark.parametrize("stored", ["bytes", "paths"])
def test_hugging_face_image_columns_give_their_bytes_else_their_path(tmp_path, stored):
    table = flickr_slice(4)
    paths = table.column("image").to_pylist()
    data = {"caption": table.column("caption").to_pylist()}
    if stored == "bytes":
        data["image"] = [{"bytes": open(p, "rb").read(), "path": None} for p in paths]
    else:
        data["image"] = paths
    ds = datasets.Dataset.from_dict(data).cast_column("image", datasets.Image())
    ds.to_parquet(str(tmp_path / "hf.parquet"))
    corpus = read_pairs(tmp_path / "hf.parquet")
    assert pa.types.is_struct(corpus.table.column("image").type)
    refs = corpus.image_refs()
    if stored == "bytes":
        assert refs == [open(p, "rb").read() for p in paths]
    else:
        assert all(isinstance(r, (bytes, str)) for r in refs) and len(refs) == 20


def test_clip_retrieval_folders_read_with_their_embeddings(tmp_path):
    images = write_clip_retrieval(tmp_path / "emb", [30, 20, 50])
    corpus = read_pairs(tmp_path / "emb")
    assert len(corpus) == 100 and corpus.roles.image_emb == "image_emb"
    assert [p.name for p in corpus.sources] == [f"metadata_{n}.parquet" for n in range(3)]
    embedded = embed_corpus(corpus, "precomputed")
    assert embedded.rows.tolist() == list(range(100))
    assert np.allclose(embedded.pairs.images, images, atol=1e-3)


def test_a_clip_retrieval_shard_out_of_line_is_refused(tmp_path):
    write_clip_retrieval(tmp_path / "emb", [30, 20])
    np.save(tmp_path / "emb" / "text_emb" / "text_emb_1.npy", np.zeros((19, 8), np.float16))
    with pytest.raises(InputError, match=r"text_emb_1\.npy holds an array of shape \(19, 8\).*20 rows"):
        read_pairs(tmp_path / "emb")


def test_embedding_columns_under_other_names(tmp_path):
    images = np.eye(4, dtype=np.float32)
    table = pa.table(
        {
            "key": ["a", "b", "c", "d"],
            "clip_img": [r.tolist() for r in images],
            "clip_txt": [r.tolist() for r in images],
        }
    )
    pq.write_table(table, tmp_path / "t.parquet")
    corpus = read_pairs(tmp_path / "t.parquet", image_emb_col="CLIP_IMG", text_emb_col="clip_txt")
    assert (corpus.roles.image_emb, corpus.roles.text_emb) == ("clip_img", "clip_txt")
    assert embed_corpus(corpus, "precomputed").rows.tolist() == [0, 1, 2, 3]


def test_no_scorable_row_says_why_with_counts(tmp_path, offline_encoder):
    table = pa.table(
        {
            "url": [f"https://example.org/{i}.jpg" for i in range(200)],
            "caption": ["a dog"] * 200,
        }
    )
    pq.write_table(table, tmp_path / "laion.parquet")
    message = (
        "no row could be scored: 200 x image is a URL; download the corpus first "
        "(for example with img2dataset)"
    )
    with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
        embed_corpus(read_pairs(tmp_path / "laion.parquet"), offline_encoder, cache_dir=tmp_path)
