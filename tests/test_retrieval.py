"""The retrieval model on real photos: which pairs it trains on, that training on the kept pairs
retrieves better than on the noisy corpus, and the file-level glue (train, evaluate, search)."""

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cleanpairs.core.training import HeadConfig, HeadTrainer
from cleanpairs.encoders import embed_corpus
from cleanpairs.errors import InputError, ParameterError
from cleanpairs.io.tables import read_pairs
from cleanpairs.pipeline import score_corpus
from cleanpairs.retrieval import (
    default_epochs,
    evaluate_corpus,
    evaluate_retrieval,
    load_retrieval_model,
    search,
    train_from_scores,
    train_retrieval,
    training_pairs,
)
from tests.conftest import flickr_slice

# 300 pairs: smaller batches than the default, so that an epoch is more than one step.
SMALL = {"batch_size": 64, "device": "cpu"}


@pytest.fixture(scope="module")
def scored(noisy_flickr, cache_dir):
    """The 60 noisy photos scored by the baseline with rematching, and their embeddings."""
    out = noisy_flickr.with_name("retrieval.scores.parquet")
    run = score_corpus(
        noisy_flickr,
        out,
        method="similarity",
        rematch=True,
        cache_dir=cache_dir,
        device="cpu",
        progress=False,
    )
    embedded = embed_corpus(
        read_pairs(noisy_flickr), "offline", cache_dir=cache_dir, device="cpu", progress=False
    )
    clean = np.asarray(pq.read_table(noisy_flickr).column("is_clean").to_pylist())[embedded.rows]
    return run, embedded.pairs, clean


@pytest.fixture(scope="module")
def held_out(tmp_path_factory, cache_dir):
    """40 clean photos of the dev split, embedded."""
    path = tmp_path_factory.mktemp("dev") / "dev.parquet"
    pq.write_table(flickr_slice(40, split="dev"), path)
    return path, embed_corpus(
        read_pairs(path), "offline", cache_dir=cache_dir, device="cpu", progress=False
    ).pairs


def test_training_pairs_are_the_kept_pairs_plus_the_confident_rematches(scored):
    run, pairs, _ = scored
    scores = run.scores
    kept = scores.p_clean >= 0.5
    moved = ~kept & (scores.rematch_index >= 0) & (np.nan_to_num(scores.rematch_score, nan=-1) >= 0.15)
    assert kept.sum() > 100 and moved.sum() > 0
    plain = training_pairs(pairs, scores.p_clean, 0.5)
    assert np.array_equal(plain.keys, pairs.keys[kept])
    assert np.array_equal(plain.texts, pairs.texts[kept])
    both = training_pairs(
        pairs, scores.p_clean, 0.5, rematch_index=scores.rematch_index, rematch_score=scores.rematch_score
    )
    assert len(both) == kept.sum() + moved.sum()
    extra = slice(int(kept.sum()), None)
    # A rematched pair is the rejected pair's image with its partner's caption.
    assert np.array_equal(both.image_index[extra], pairs.image_index[moved])
    assert np.array_equal(both.texts[extra], pairs.texts[scores.rematch_index[moved]])
    assert np.array_equal(both.keys[extra], pairs.keys[moved])


def test_training_pairs_refuse_what_cannot_be_trained_on(scored):
    run, pairs, _ = scored
    p = run.scores.p_clean
    with pytest.raises(
        ParameterError, match=r"only 0 pair\(s\) reach cp_p_clean >= 1.0.*lower the threshold"
    ):
        training_pairs(pairs, np.minimum(p, 0.9), 1.0)
    with pytest.raises(ParameterError, match="one entry per pair"):
        training_pairs(pairs, p, 0.5, rematch_index=np.zeros(3, int), rematch_score=np.zeros(3))
    with pytest.raises(ParameterError, match="both rematch_index and rematch_score"):
        training_pairs(pairs, p, 0.5, rematch_index=run.scores.rematch_index)
    with pytest.raises(ParameterError, match=r"within \[0, 1\]"):
        training_pairs(pairs, p, 1.5)


def test_the_model_trained_on_kept_pairs_retrieves_better_than_on_the_noisy_corpus(scored, held_out):
    run, pairs, clean = scored
    _, dev = held_out
    noisy = evaluate_retrieval(train_retrieval(pairs, **SMALL), dev)["rsum"]
    kept = evaluate_retrieval(train_retrieval(training_pairs(pairs, run.scores.p_clean, 0.5), **SMALL), dev)
    truth = evaluate_retrieval(train_retrieval(training_pairs(pairs, clean.astype(float), 0.5), **SMALL), dev)
    untrained = evaluate_retrieval(HeadTrainer(pairs, HeadConfig(hidden=0), device="cpu").heads(), dev)
    assert set(kept) == {"i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum"}
    assert kept["rsum"] == pytest.approx(sum(v for name, v in kept.items() if name != "rsum"))
    assert untrained["rsum"] + 40 < noisy < kept["rsum"] <= truth["rsum"] + 10


def test_same_seed_same_model_and_training_is_recorded(scored):
    _, pairs, _ = scored
    first = train_retrieval(pairs, seed=3, encoder="offline", **SMALL)
    again = train_retrieval(pairs, seed=3, **SMALL)
    other = train_retrieval(pairs, seed=4, **SMALL)
    assert np.array_equal(first.embed_texts(pairs.texts), again.embed_texts(pairs.texts))
    assert not np.array_equal(first.embed_texts(pairs.texts), other.embed_texts(pairs.texts))
    assert first.encoder == "offline" and first.embed_images(pairs.images).shape == (60, 256)
    assert first.info["epochs"] == default_epochs(300) and first.info["rows"] == 300
    assert first.info["temperature"] == 0.07 and first.info["hidden"] == 0


def test_default_epochs_fall_with_the_corpus_size():
    assert [default_epochs(n) for n in (6_000, 12_000, 18_000, 30_000, 1_000_000)] == [3, 2, 2, 1, 1]


def test_bad_training_parameters_are_one_sentence(scored):
    _, pairs, _ = scored
    with pytest.raises(
        ParameterError, match=r"The 'temperature' parameter of train_retrieval must be a float"
    ):
        train_retrieval(pairs, temperature=0.0)
    with pytest.raises(ParameterError, match=r"The 'epochs' parameter .* Got 0 instead"):
        train_retrieval(pairs, epochs=0)


def test_train_from_scores_saves_a_model_that_evaluates_and_searches(scored, held_out, tmp_path, cache_dir):
    run, pairs, _ = scored
    dev_path, dev = held_out
    model_dir = tmp_path / "model"
    model = train_from_scores(
        run.output, model_dir, thresh=0.5, rematch=True, cache_dir=cache_dir, device="cpu", progress=False
    )
    kept = int((run.scores.p_clean >= 0.5).sum())
    assert model.info["rows_kept"] == kept and model.info["rows_rematched"] > 0
    assert model.info["rows"] == kept + model.info["rows_rematched"]
    assert model.info["scores_file"] == str(run.output.resolve()) and model.info["threshold"] == 0.5
    loaded = load_retrieval_model(model_dir, device="cpu")
    assert loaded.encoder == "offline" and loaded.info == model.info
    assert np.array_equal(loaded.embed_images(pairs.images), model.embed_images(pairs.images))

    evaluation = evaluate_corpus(model_dir, dev_path, cache_dir=cache_dir, device="cpu", progress=False)
    assert evaluation.metrics == evaluate_retrieval(model, dev)
    assert (evaluation.pairs, evaluation.images, evaluation.not_scored) == (200, 40, 0)

    # By default the corpus searched is the one the model was trained on.
    table = pq.read_table(run.output)
    row = int(np.flatnonzero(np.asarray(table.column("is_clean")) & (run.scores.p_clean >= 0.5))[0])
    caption, photo = table.column("caption")[row].as_py(), table.column("image")[row].as_py()
    options = {"cache_dir": cache_dir, "device": "cpu", "progress": False}
    first = search(model_dir, None, text=caption, k=5, **options)
    assert first.built_index and first.items == 60 and first.corpus == str(run.output.resolve())
    assert photo in [hit.image for hit in first.hits]
    assert [hit.rank for hit in first.hits] == [1, 2, 3, 4, 5]
    assert all(a.score >= b.score for a, b in zip(first.hits, first.hits[1:], strict=False))
    saved = {p: p.stat().st_mtime_ns for p in (model_dir / "index").rglob("*") if p.is_file()}

    by_image = search(model_dir, None, image=photo, k=5, **options)
    assert not by_image.built_index and by_image.items == 300
    rows = table.select(["key", "image", "is_clean"]).to_pylist()
    own = {r["key"] for r in rows if r["image"] == photo and r["is_clean"]}
    assert own & {hit.key for hit in by_image.hits} and all(hit.caption for hit in by_image.hits)
    assert saved == {p: p.stat().st_mtime_ns for p in (model_dir / "index").rglob("*") if p.is_file()}

    other = search(model_dir, dev_path, text="a dog runs", k=3, **options)
    assert other.built_index and other.items == 40 and len(other.hits) == 3
    assert len(list((model_dir / "index").iterdir())) == 2


def test_a_scores_file_written_away_from_its_relative_images_still_trains(tmp_path, cache_dir):
    corpus_dir, scores_dir = tmp_path / "corpus", tmp_path / "elsewhere"
    corpus_dir.mkdir()
    table = flickr_slice(12)
    relative = [os.path.relpath(p, corpus_dir) for p in table.column("image").to_pylist()]
    table = table.set_column(table.schema.get_field_index("image"), "image", pa.array(relative))
    pq.write_table(table, corpus_dir / "pairs.parquet")
    run = score_corpus(
        corpus_dir / "pairs.parquet",
        scores_dir / "scores.parquet",
        method="similarity",
        params={"batch_size": 16},
        cache_dir=cache_dir,
        device="cpu",
        progress=False,
    )
    model = train_from_scores(
        run.output, tmp_path / "model", thresh=0.0, cache_dir=cache_dir, device="cpu", progress=False
    )
    assert model.info["rows"] == 60


def test_glue_refuses_bad_input_and_writes_nothing(scored, tmp_path, noisy_flickr):
    run, _, _ = scored
    with pytest.raises(InputError, match="not a scores file"):
        train_from_scores(noisy_flickr, tmp_path / "m", device="cpu", progress=False)
    with pytest.raises(ParameterError, match="lower the threshold"):
        train_from_scores(run.output, tmp_path / "m", thresh=1.0, device="cpu", progress=False)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("mine")
    with pytest.raises(InputError, match="not a cleanpairs model"):
        train_from_scores(run.output, tmp_path / "notes", device="cpu", progress=False)
    with pytest.raises(InputError, match="exactly one query"):
        search(tmp_path / "m", noisy_flickr, text="x", image="y.jpg")
    with pytest.raises(InputError, match="no such model folder"):
        search(tmp_path / "m", noisy_flickr, text="a dog")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.txt", "notes"]
