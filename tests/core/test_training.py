"""The training core: heads, the epoch loop, per-pair statistics and per-pair state."""

import numpy as np
import pytest
import torch

from cleanpairs.core.heads import AveragedHeads
from cleanpairs.core.losses import info_nce
from cleanpairs.core.state import PairState
from cleanpairs.core.training import HeadConfig, HeadTrainer, lr_at
from cleanpairs.methods import PairEmbeddings
from tests.methods.test_contract import synthetic_pairs


def nce(batch):
    return info_nce(batch.scores, 0.1, batch.same_image)


def test_training_aligns_separate_spaces_and_is_repeatable():
    pairs, _ = synthetic_pairs(noise=0.0)
    runs = []
    for _ in range(2):
        trainer = HeadTrainer(pairs, HeadConfig(dim=16, hidden=32, batch_size=32), seed=1, device="cpu")
        before = trainer.similarity()
        losses = [trainer.run_epoch(nce) for _ in range(15)]
        runs.append(trainer.similarity())
    assert losses[-1] < 0.5 * losses[0]
    assert runs[1].mean() > before.mean() + 0.3
    assert np.array_equal(runs[0], runs[1])


def test_aligned_encoder_starts_from_its_own_similarity():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(10, 8)).astype(np.float32)
    texts = images[np.arange(20) % 10] + 0.1 * rng.normal(size=(20, 8)).astype(np.float32)
    pairs = PairEmbeddings(images, texts, np.arange(20) % 10, np.arange(20), aligned=True)
    trainer = HeadTrainer(pairs, HeadConfig(), seed=0, device="cpu")
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    expected = (unit(images)[pairs.image_index] * unit(texts)).sum(axis=1)
    assert np.allclose(trainer.similarity(), expected, atol=1e-5)


def test_epoch_over_a_subset_and_per_pair_statistics_in_corpus_order():
    pairs, _ = synthetic_pairs()
    trainer = HeadTrainer(pairs, HeadConfig(dim=8, hidden=0, batch_size=16), seed=0, device="cpu")
    seen = []
    trainer.run_epoch(lambda b: seen.append(b.index.clone()) or nce(b), subset=np.arange(40))
    seen = torch.cat(seen).numpy()
    assert set(seen) <= set(range(40)) and len(seen) == 32  # the partial last batch is dropped
    positions = trainer.pair_statistic(lambda b: b.index.float())
    assert np.array_equal(positions, np.arange(len(pairs), dtype=np.float32))


def test_averaged_heads_dot_product_is_the_mean_cosine():
    pairs, _ = synthetic_pairs()
    models = [HeadTrainer(pairs, HeadConfig(dim=8, hidden=4), seed=k, device="cpu") for k in range(2)]
    joined = AveragedHeads([m.heads() for m in models])
    image = joined.embed_images(pairs.images)[pairs.image_index]
    text = joined.embed_texts(pairs.texts)
    mean = np.mean([m.similarity() for m in models], axis=0)
    assert np.allclose((image * text).sum(axis=1), mean, atol=1e-5)


def test_learning_rate_steps():
    assert lr_at(0, 1e-3, 0) == 1e-3
    assert lr_at(29, 2e-4, 30) == pytest.approx(2e-4)
    assert lr_at(30, 2e-4, 30) == pytest.approx(2e-5)


def test_pair_state_blends_batches_and_keeps_a_history():
    state = PairState(4)
    state.init("label", 1.0)
    state.blend("label", np.array([0.0, 0.0]), momentum=0.8, index=np.array([1, 3]))
    assert state["label"].tolist() == pytest.approx([1.0, 0.8, 1.0, 0.8])
    state.end_epoch("label")
    state.update(loss=np.arange(4.0))
    assert state.history_summary() == {"label": [0.9], "loss": [1.5]}
    with pytest.raises(ValueError, match="one value per pair"):
        state.set("loss", np.zeros(3))
