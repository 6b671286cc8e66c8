"""The robust trainers on real photos: a Flickr8k train slice with 40% of captions shuffled."""

import numpy as np
import pytest

from cleanpairs.encoders import embed_corpus
from cleanpairs.io.tables import read_pairs
from cleanpairs.metrics import detection_metrics, retrieval_metrics
from cleanpairs.pipeline import fit_method
from tests.conftest import flickr_slice, with_shuffled_captions

# Small data, so smaller batches than the defaults (which are sized for 30,000 pairs).
SMALL = {
    "similarity": {"batch_size": 64},
    "ncr": {"batch_size": 64},
    "crcl": {"batch_size": 64},
}
AUROC_FLOOR = 0.85


@pytest.fixture(scope="module")
def noisy_slice(tmp_path_factory, cache_dir):
    import pyarrow.parquet as pq

    table = with_shuffled_captions(flickr_slice(150, offset=300), 0.4, seed=1)
    path = tmp_path_factory.mktemp("flickr-slice") / "pairs.parquet"
    pq.write_table(table, path)
    embedded = embed_corpus(read_pairs(path), "offline", cache_dir=cache_dir, device="cpu", progress=False)
    return embedded.pairs, np.asarray(table.column("is_clean").to_pylist())[embedded.rows]


@pytest.fixture(scope="module")
def fitted(noisy_slice):
    pairs, _ = noisy_slice
    return {m: fit_method(pairs, m, SMALL[m], seed=0, device="cpu")[0] for m in SMALL}


@pytest.mark.parametrize("method", ["ncr", "crcl"])
def test_robust_methods_beat_the_baseline_on_real_photos(method, noisy_slice, fitted):
    _, clean = noisy_slice
    baseline = detection_metrics(fitted["similarity"].p_clean, clean)["auroc"]
    ours = detection_metrics(fitted[method].p_clean, clean)["auroc"]
    soft = detection_metrics(fitted[method].soft_label, clean)["auroc"]
    assert ours > AUROC_FLOOR and soft > AUROC_FLOOR
    assert ours > baseline, (ours, baseline)


@pytest.mark.parametrize("method", ["ncr", "crcl"])
def test_soft_labels_are_bounded_and_the_same_seed_repeats(method, noisy_slice, fitted):
    pairs, _ = noisy_slice
    scores = fitted[method]
    assert scores.soft_label.min() >= 0 and scores.soft_label.max() <= 1
    again = fit_method(pairs, method, SMALL[method], seed=0, device="cpu")[0]
    assert np.array_equal(again.p_clean, scores.p_clean)
    assert np.array_equal(again.soft_label, scores.soft_label)


def test_caption_agreement_sharpens_the_split_on_real_photos(noisy_slice, fitted):
    pairs, clean = noisy_slice
    alone = fit_method(pairs, "ncr", {**SMALL["ncr"], "agreement": 0.0}, seed=0, device="cpu")[0]
    with_agreement = detection_metrics(fitted["ncr"].p_clean, clean)["auroc"]
    assert with_agreement > detection_metrics(alone.p_clean, clean)["auroc"] + 0.005


def test_trained_heads_retrieve_their_own_captions(noisy_slice, fitted):
    pairs, clean = noisy_slice
    heads = fitted["ncr"].heads
    result = retrieval_metrics(
        heads.embed_images(pairs.images), heads.embed_texts(pairs.texts[clean]), pairs.image_index[clean]
    )
    assert result["t2i_r10"] > 50  # 150 images: chance is under 7%
