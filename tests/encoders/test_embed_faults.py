"""Rows that cannot be embedded keep their place with a reason, and the rest are embedded and
scored: an image over the pixel limit, precomputed vectors holding NaN or inf. Precomputed
columns of the wrong shape stop the run in one line."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from cleanpairs.encoders.embed import NOT_FINITE, embed_corpus
from cleanpairs.errors import InputError
from cleanpairs.io.tables import read_pairs
from cleanpairs.pipeline import score_corpus
from cleanpairs.schema import P_CLEAN, STATUS
from tests.conftest import flickr_slice, write_blank_png


def precomputed(tmp_path, image_emb, text_emb, name="pairs.parquet"):
    n = len(image_emb)
    table = pa.table({"key": [f"k{i}" for i in range(n)], "image_emb": image_emb, "text_emb": text_emb})
    pq.write_table(table, tmp_path / name)
    return tmp_path / name


def matching_vectors(n=40, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(n, dim)).astype(np.float32)
    return images, images + 0.1 * rng.normal(size=(n, dim)).astype(np.float32)


def test_an_image_over_the_pixel_limit_is_a_row_status_and_the_others_are_embedded(
    tmp_path, offline_encoder, cache_dir
):
    table = flickr_slice(2, offset=100).slice(0, 4)
    write_blank_png(tmp_path / "huge.png", 15_000, 15_000)
    images = table.column("image").to_pylist()
    images[1] = str(tmp_path / "huge.png")
    table = table.set_column(table.schema.get_field_index("image"), "image", pa.array(images))
    pq.write_table(table, tmp_path / "pairs.parquet")
    embedded = embed_corpus(
        read_pairs(tmp_path / "pairs.parquet"), offline_encoder, cache_dir=cache_dir, progress=False
    )
    assert embedded.status == ["ok", "image too large (225000000 pixels, limit 89478485)", "ok", "ok"]
    assert embedded.rows.tolist() == [0, 2, 3] and np.isfinite(embedded.pairs.images).all()
    assert Image.MAX_IMAGE_PIXELS == 89_478_485
    # A lower limit for this call only: every Flickr photo (500 x ~375) is now too large, and a
    # corpus with no scorable row is refused with the count of each reason.
    too_large = r"\d+ x image too large \(\d+ pixels, limit 1000\)"
    with pytest.raises(InputError, match=rf"^no row could be scored: {too_large}(; {too_large})*$"):
        embed_corpus(
            read_pairs(tmp_path / "pairs.parquet"),
            offline_encoder,
            cache_dir=tmp_path / "fresh-cache",
            progress=False,
            max_image_pixels=1000,
        )


def test_nan_inf_and_missing_numbers_are_row_statuses(tmp_path):
    images, texts = matching_vectors(6)
    images[1, 3] = np.nan
    texts[2, 0] = np.inf
    image_lists = [row.tolist() for row in images]
    image_lists[4][5] = None  # a null inside a vector
    text_lists = [row.tolist() for row in texts]
    text_lists[5] = None  # no vector at all
    path = precomputed(tmp_path, image_lists, text_lists)
    embedded = embed_corpus(read_pairs(path), "precomputed")
    assert embedded.status == ["ok", NOT_FINITE, NOT_FINITE, "ok", NOT_FINITE, "no text embedding"]
    assert embedded.rows.tolist() == [0, 3] and list(embedded.pairs.keys) == ["k0", "k3"]
    assert np.isfinite(embedded.pairs.images).all() and np.isfinite(embedded.pairs.texts).all()


def test_a_corpus_with_nan_rows_is_scored_except_those_rows(tmp_path):
    images, texts = matching_vectors(40)
    images[3, 2], texts[7, 0] = np.nan, -np.inf
    path = precomputed(tmp_path, list(images), list(texts))
    run = score_corpus(
        path, tmp_path / "scores.parquet", method="similarity", encoder="precomputed", progress=False
    )
    table = pq.read_table(tmp_path / "scores.parquet")
    status = table.column(STATUS).to_pylist()
    p_clean = table.column(P_CLEAN).to_pylist()
    assert status[3] == status[7] == NOT_FINITE and p_clean[3] is None and p_clean[7] is None
    assert run.meta.scored_rows == 38 and all(p is not None for i, p in enumerate(p_clean) if i not in (3, 7))


def test_vectors_of_different_lengths_are_refused_naming_rows(tmp_path):
    images, texts = matching_vectors(6)
    ragged = [row.tolist() for row in images]
    ragged[4] = ragged[4][:15]
    path = precomputed(tmp_path, ragged, list(texts))
    with pytest.raises(
        InputError,
        match=r"^column 'image_emb' holds vectors of different lengths \(16 in row 0, 15 in row 4\)",
    ):
        embed_corpus(read_pairs(path), "precomputed")


def test_empty_vectors_are_refused(tmp_path):
    path = precomputed(tmp_path, pa.array([[], []], pa.list_(pa.float32())), [[1.0], [2.0]])
    with pytest.raises(InputError, match=r"^column 'image_emb' holds empty vectors"):
        embed_corpus(read_pairs(path), "precomputed")


def test_lists_of_integers_are_numbers_and_lists_of_strings_are_refused(tmp_path):
    images, texts = matching_vectors(4)
    path = precomputed(tmp_path, [[int(x) for x in 10 * row] for row in images], list(texts))
    embedded = embed_corpus(read_pairs(path), "precomputed")
    assert embedded.status == ["ok"] * 4
    assert np.array_equal(embedded.pairs.images, np.trunc(10 * images).astype(np.float32))
    path = precomputed(tmp_path, [[str(x) for x in row] for row in images], list(texts), "strings.parquet")
    with pytest.raises(
        InputError, match=r"^column 'image_emb' \(image embedding\) must be a list of numbers"
    ):
        read_pairs(path)


def test_image_and_text_vectors_of_different_sizes_are_separate_spaces(tmp_path):
    # Precomputed columns are taken "as given": of one size, one shared space; of two sizes, two
    # spaces the methods' heads learn to align (as with the offline encoder).
    images, texts = matching_vectors(40)
    path = precomputed(tmp_path, list(images), list(texts[:, :8]))
    embedded = embed_corpus(read_pairs(path), "precomputed")
    assert embedded.pairs.images.shape[1] == 16 and embedded.pairs.texts.shape[1] == 8
    assert not embedded.pairs.aligned
    same = embed_corpus(
        read_pairs(precomputed(tmp_path, list(images), list(texts), "same.parquet")), "precomputed"
    )
    assert same.pairs.aligned
