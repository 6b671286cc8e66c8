"""Corpus alignment: cross-moments summed over shards, CCA of them, the maps kept and applied."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cleanpairs.contract import PairEmbeddings
from cleanpairs.core.alignment import (
    ALIGN_RIDGE,
    AlignedHeads,
    CorpusAlignment,
    CrossMoments,
    aligns_sample,
    ridge_for,
)


def linked_pairs(
    n_images=300, per_image=3, shuffled=0.4, seed=0, whole_images=False, dims=(40, 24), spread=0.5
):
    """Images and captions in separate spaces sharing an 8-d latent; ``shuffled`` of the captions
    describe another image (with ``whole_images``, every caption of that share of the images
    describes one other image); ``spread``: the noise of each embedding around its latent.
    Truth: True for a caption of its own image."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n_images, 8))
    images = latent @ rng.normal(size=(8, dims[0])) + spread * rng.normal(size=(n_images, dims[0]))
    image_index = np.repeat(np.arange(n_images), per_image)
    source = image_index.copy()
    if whole_images:
        moved = np.flatnonzero(rng.random(n_images) < shuffled)
        owner = np.arange(n_images)
        owner[moved] = np.roll(moved, 1)
        source = owner[image_index]
    else:
        noisy = rng.random(len(source)) < shuffled
        source[noisy] = rng.permutation(source[noisy])
    texts = latent[source] @ rng.normal(size=(8, dims[1])) + spread * rng.normal(size=(len(source), dims[1]))
    keys = np.array([f"k{i}" for i in range(len(source))])
    pairs = PairEmbeddings(images.astype(np.float32), texts.astype(np.float32), image_index, keys)
    return pairs, source == image_index


def test_moments_of_parts_add_up_to_the_moments_of_the_whole():
    pairs, _ = linked_pairs()
    whole = CrossMoments.of_pairs(pairs)
    first, second = pairs.take(np.arange(500)), pairs.take(np.arange(500, len(pairs)))
    summed = CrossMoments.of_pairs(first) + CrossMoments.of_pairs(second)
    assert summed.count == whole.count == len(pairs)
    for name in ("image_sum", "text_sum", "image_image", "text_text", "image_text"):
        np.testing.assert_allclose(getattr(summed, name), getattr(whole, name), rtol=1e-10, atol=1e-8)
    again = CrossMoments.from_arrays(whole.to_arrays())
    assert again.count == whole.count and np.array_equal(again.image_text, whole.image_text)


def test_the_shared_space_separates_shuffled_captions_fit_on_the_noisy_corpus_itself():
    pairs, clean = linked_pairs()
    alignment = CorpusAlignment.fit(CrossMoments.of_pairs(pairs), dim=8)
    shared = alignment.apply(pairs)
    assert shared.aligned and shared.images.shape == (300, 8) and shared.texts.shape == (900, 8)
    np.testing.assert_allclose(np.linalg.norm(shared.texts, axis=1), 1, atol=1e-5)
    cosine = np.einsum("ij,ij->i", shared.pair_images(), shared.texts)
    assert roc_auc_score(clean, cosine) > 0.95
    # The same corpus without noise gives nearly the same space: shuffled captions dilute the
    # cross-covariance without bending it.
    clean_only = CorpusAlignment.fit(CrossMoments.of_pairs(pairs.take(np.flatnonzero(clean))), dim=8)
    shared_clean = clean_only.apply(pairs)
    clean_cosine = np.einsum("ij,ij->i", shared_clean.pair_images(), shared_clean.texts)
    assert abs(roc_auc_score(clean, clean_cosine) - roc_auc_score(clean, cosine)) < 0.01


def shared_cosine_auroc(alignment, pairs, clean):
    shared = alignment.apply(pairs)
    return roc_auc_score(clean, np.einsum("ij,ij->i", shared.pair_images(), shared.texts))


def test_with_fewer_pairs_than_dimensions_the_ridge_grows_so_wrong_captions_stay_apart():
    pairs, clean = linked_pairs(n_images=60, dims=(300, 200), spread=4.0)
    moments = CrossMoments.of_pairs(pairs)
    assert ridge_for(180, 500) > 10 * ALIGN_RIDGE and ridge_for(10_000, 500) == ALIGN_RIDGE
    grown = shared_cosine_auroc(CorpusAlignment.fit(moments, dim=8), pairs, clean)
    fixed = shared_cosine_auroc(CorpusAlignment.fit(moments, dim=8, ridge=ALIGN_RIDGE), pairs, clean)
    assert grown > 0.9 and grown > fixed + 0.1, (grown, fixed)


def test_the_alignment_keeps_no_more_directions_than_either_space_has():
    pairs, _ = linked_pairs()
    assert CorpusAlignment.fit(CrossMoments.of_pairs(pairs), dim=128).dim == 24


def test_a_kept_alignment_is_the_same_map_and_a_broken_one_is_refused():
    pairs, _ = linked_pairs()
    alignment = CorpusAlignment.fit(CrossMoments.of_pairs(pairs), dim=8)
    again = CorpusAlignment.from_arrays(alignment.to_arrays())
    assert np.array_equal(again.apply(pairs).texts, alignment.apply(pairs).texts)
    broken = {**alignment.to_arrays(), "text_map": alignment.text_map[:, :4]}
    with pytest.raises(ValueError, match="do not fit"):
        CorpusAlignment.from_arrays(broken)
    with pytest.raises(ValueError, match="at least 2 pairs"):
        CorpusAlignment.fit(CrossMoments.of_pairs(pairs.take(np.arange(1))))


def test_aligned_heads_take_encoder_embeddings():
    pairs, _ = linked_pairs()
    alignment = CorpusAlignment.fit(CrossMoments.of_pairs(pairs), dim=8)
    heads = AlignedHeads(alignment, None)
    assert np.array_equal(heads.embed_images(pairs.images), alignment.apply(pairs).images)
    assert heads.embed_texts(pairs.texts[:5]).shape == (5, 8)


def test_auto_aligns_a_sample_under_caption_noise_and_not_under_whole_image_noise():
    for whole_images, expected in ((False, True), (True, False)):
        pairs, _ = linked_pairs(whole_images=whole_images)
        alignment = CorpusAlignment.fit(CrossMoments.of_pairs(pairs), dim=8)
        aligned, share = aligns_sample(alignment, pairs)
        assert aligned is expected, share
    single, _ = linked_pairs(per_image=1)
    assert aligns_sample(CorpusAlignment.fit(CrossMoments.of_pairs(single), dim=8), single) == (True, None)
