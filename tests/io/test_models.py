"""Model folders: heads saved and read back with their sizes and encoder, foreign folders refused,
search indexes kept per corpus."""

import argparse
import json
import re
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from cleanpairs.core.candidates import build_index
from cleanpairs.core.training import HeadConfig, HeadTrainer
from cleanpairs.errors import InputError
from cleanpairs.io.models import (
    MODEL_FILE,
    IndexNotSaved,
    SearchIndex,
    corpus_files_fingerprint,
    is_model_folder,
    load_index,
    load_model,
    save_index,
    save_model,
)
from cleanpairs.methods.base import PairEmbeddings
from tests.conftest import read_only_copy


def heads(hidden: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    pairs = PairEmbeddings(
        rng.normal(size=(8, 12)), rng.normal(size=(16, 6)), np.arange(16) % 8, np.arange(16)
    )
    return HeadTrainer(pairs, HeadConfig(dim=4, hidden=hidden), seed=seed, device="cpu").heads(), pairs


@pytest.mark.parametrize("hidden", [0, 10])
def test_a_saved_model_embeds_as_the_trained_one(tmp_path, hidden):
    trained, pairs = heads(hidden)
    save_model(tmp_path / "model", trained, "offline", {"epochs": 2, "threshold": 0.5})
    saved = load_model(tmp_path / "model", device="cpu")
    assert saved.encoder == "offline" and saved.info == {"epochs": 2, "threshold": 0.5}
    assert np.array_equal(saved.heads.embed_images(pairs.images), trained.embed_images(pairs.images))
    assert np.array_equal(saved.heads.embed_texts(pairs.texts), trained.embed_texts(pairs.texts))
    description = json.loads((tmp_path / "model" / MODEL_FILE).read_text())
    assert description["heads"]["image"] == {"d_in": 12, "d_out": 4, "hidden": hidden}
    assert description["heads"]["text"] == {"d_in": 6, "d_out": 4, "hidden": hidden}
    assert description["version"] and sorted(p.name for p in (tmp_path / "model").iterdir()) == [
        "image_head.pt",
        "model.json",
        "text_head.pt",
    ]


def test_saving_again_replaces_the_model_and_its_indexes(tmp_path):
    first, _ = heads(0, seed=1)
    save_model(tmp_path / "model", first, "offline", {"run": 1})
    (tmp_path / "model" / "index").mkdir()
    second, pairs = heads(0, seed=2)
    save_model(tmp_path / "model", second, "offline", {"run": 2})
    saved = load_model(tmp_path / "model", device="cpu")
    assert saved.info == {"run": 2} and not (tmp_path / "model" / "index").exists()
    assert np.array_equal(saved.heads.embed_texts(pairs.texts), second.embed_texts(pairs.texts))


def test_foreign_folders_are_refused_in_one_sentence(tmp_path):
    trained, _ = heads(0)
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"not mine to delete")
    with pytest.raises(InputError, match=r"already holds files that are not a cleanpairs model"):
        save_model(tmp_path / "photos", trained, "offline", {})
    assert (tmp_path / "photos" / "cat.jpg").read_bytes() == b"not mine to delete"
    with pytest.raises(
        InputError, match=r"is not a cleanpairs model folder \(make one with `cleanpairs train`\)"
    ):
        load_model(tmp_path / "photos")
    with pytest.raises(InputError, match="no such model folder"):
        load_model(tmp_path / "nothing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        save_model(tmp_path / "file", trained, "offline", {})
    assert not is_model_folder(tmp_path / "photos")


def test_an_index_is_kept_per_corpus_fingerprint(tmp_path):
    trained, pairs = heads(0)
    save_model(tmp_path / "model", trained, "offline", {})
    corpus = tmp_path / "corpus.parquet"
    corpus.write_bytes(b"first version")
    fingerprint = corpus_files_fingerprint(corpus, None, None, None)
    assert load_index(tmp_path / "model", fingerprint) is None
    images, texts = trained.embed_images(pairs.images), trained.embed_texts(pairs.texts)
    index = SearchIndex(
        build_index(images),
        build_index(texts),
        pa.table({"key": list(range(8)), "image": [f"{i}.jpg" for i in range(8)]}),
        pa.table({"key": list(range(16)), "image": ["x.jpg"] * 16, "caption": ["c"] * 16}),
        {"images": 8},
    )
    save_index(tmp_path / "model", fingerprint, index)
    back = load_index(tmp_path / "model", fingerprint)
    assert back.images.ntotal == 8 and back.texts.ntotal == 16 and back.info == {"images": 8}
    assert back.image_items.equals(index.image_items) and back.text_items.equals(index.text_items)
    assert np.array_equal(back.texts.search(texts[:3], 1)[1][:, 0], [0, 1, 2])
    # Another column choice or an edited table is another corpus.
    assert corpus_files_fingerprint(corpus, None, "photo", None) != fingerprint
    corpus.write_bytes(b"second, longer version")
    assert corpus_files_fingerprint(corpus, None, None, None) != fingerprint
    with pytest.raises(InputError, match="no such file or folder"):
        corpus_files_fingerprint(tmp_path / "missing.parquet")


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory):
    """A model folder written by the real `cleanpairs train` path on a tiny precomputed corpus."""
    from cleanpairs.pipeline import score_corpus
    from cleanpairs.retrieval import train_from_scores

    folder = tmp_path_factory.mktemp("trained")
    rng = np.random.default_rng(0)
    images = rng.normal(size=(40, 12)).astype(np.float32)
    texts = rng.normal(size=(40, 6)).astype(np.float32)
    table = pa.table(
        {"key": [f"k{i}" for i in range(40)], "image_emb": list(images), "text_emb": list(texts)}
    )
    pq.write_table(table, folder / "pairs.parquet")
    score_corpus(
        folder / "pairs.parquet", folder / "scores.parquet", method="similarity", encoder="precomputed",
        params={"epochs": 1}, progress=False,
    )  # fmt: skip
    train_from_scores(folder / "scores.parquet", folder / "model", thresh=0.0, epochs=1, progress=False)
    return folder / "model"


def damaged(trained_model, tmp_path, damage):
    copy = tmp_path / "model"
    shutil.copytree(trained_model, copy)
    damage(copy)
    with pytest.raises(InputError) as refused:
        load_model(copy, device="cpu")
    assert "\n" not in str(refused.value)
    return str(refused.value)


def edit_description(**changes):
    def damage(folder):
        description = json.loads((folder / MODEL_FILE).read_text())
        for path, value in changes.items():
            *parents, last = path.split("__")
            node = description
            for name in parents:
                node = node[name]
            if value is None:
                del node[last]
            else:
                node[last] = value
        (folder / MODEL_FILE).write_text(json.dumps(description))

    return damage


def test_the_trained_model_loads(trained_model):
    saved = load_model(trained_model, device="cpu")
    assert saved.encoder == "precomputed" and saved.heads.embed_images(np.ones((2, 12))).shape == (2, 256)


def remove(name):
    return lambda folder: (folder / name).unlink()


def overwrite(name, data):
    return lambda folder: (folder / name).write_bytes(data)


SHAPES = r"\(d_in 16, d_out 256, hidden 0\): its shortcut\.weight is \[256, 12\], not \[256, 16\]$"
GARBAGE = r"text_head\.pt cannot be read as torch tensors \(not a file torch\.save wrote\)$"


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (remove(MODEL_FILE), r"is not a cleanpairs model folder .*: it has no model\.json$"),
        (overwrite(MODEL_FILE, b'{"format": '), r"model\.json cannot be read as JSON \(.*damaged$"),
        (overwrite(MODEL_FILE, b"\xff\xfe\x00"), r"model\.json cannot be read as JSON"),
        (edit_description(heads=None, encoder=None), r"model\.json lacks fields encoder, heads;"),
        (edit_description(heads__text=None), r"model\.json lacks fields heads\.text;"),
        (edit_description(heads__image__d_in="12"), r"gives the image head's sizes as \{.*\"12\""),
        (edit_description(heads__text__d_out=128), r"gives the heads different output sizes \(256 and 128\)"),
        (edit_description(heads__image__d_in=16), r"image_head\.pt does not hold the image head .*" + SHAPES),
        (
            edit_description(heads__text__hidden=8),
            r"text_head\.pt does not hold .*: it lacks mlp\.0\.weight$",
        ),
        (remove("text_head.pt"), r"^the model in .* lacks its text head: .*text_head\.pt is missing$"),
        (overwrite("text_head.pt", b"\x00garbage" * 8), GARBAGE),
        (overwrite("text_head.pt", b""), r"text_head\.pt cannot be read as torch tensors \(EOFError\)$"),
        (
            lambda f: torch.save([torch.zeros(2)], f / "image_head.pt"),
            r"image_head\.pt does not hold a state",
        ),
    ],
)
def test_a_damaged_model_folder_is_refused_in_one_line(trained_model, tmp_path, damage, message):
    assert re.search(message, damaged(trained_model, tmp_path, damage))


def test_a_head_holding_pickled_objects_is_refused_naming_the_file(trained_model, tmp_path):
    def smuggle(folder):
        state = torch.load(folder / "image_head.pt", weights_only=True)
        torch.save({**state, "note": argparse.Namespace(run="rm -rf")}, folder / "image_head.pt")

    message = damaged(trained_model, tmp_path, smuggle)
    assert message.startswith(f"{tmp_path / 'model' / 'image_head.pt'} is refused by a weights-only load: ")
    assert "it holds argparse.Namespace, not only tensors" in message


def some_index(model_folder):
    saved = load_model(model_folder, device="cpu")
    rng = np.random.default_rng(1)
    images = saved.heads.embed_images(rng.normal(size=(4, 12)))
    texts = saved.heads.embed_texts(rng.normal(size=(4, 6)))
    return SearchIndex(
        build_index(images), build_index(texts),
        pa.table({"key": list(range(4)), "image": ["a.jpg"] * 4}),
        pa.table({"key": list(range(4)), "image": ["a.jpg"] * 4, "caption": ["c"] * 4}),
        {"images": 4},
    )  # fmt: skip


def test_an_index_cannot_be_saved_in_a_read_only_model_folder(trained_model, tmp_path):
    index = some_index(trained_model)
    with read_only_copy(trained_model, tmp_path / "ro") as model:
        with pytest.raises(
            IndexNotSaved, match=r"^cannot write .*index/abc: .* is on a read-only file system$"
        ):
            save_index(model, "abc", index)
        assert sorted(p.name for p in model.iterdir()) == ["image_head.pt", "model.json", "text_head.pt"]
        assert load_model(model, device="cpu").encoder == "precomputed"


def test_a_damaged_saved_index_counts_as_none(trained_model, tmp_path):
    shutil.copytree(trained_model, tmp_path / "model")
    folder = save_index(tmp_path / "model", "abc", some_index(tmp_path / "model"))
    assert load_index(tmp_path / "model", "abc").texts.ntotal == 4
    (folder / "texts.faiss").write_bytes(b"half an index")
    assert load_index(tmp_path / "model", "abc") is None


def test_a_corpus_embedded_to_other_sizes_than_the_heads_take_is_refused(trained_model, tmp_path):
    from cleanpairs.retrieval import evaluate_corpus

    rng = np.random.default_rng(2)
    table = pa.table(
        {
            "image_emb": list(rng.normal(size=(6, 16)).astype(np.float32)),
            "text_emb": list(rng.normal(size=(6, 6))),
        }
    )
    pq.write_table(table, tmp_path / "other.parquet")
    with pytest.raises(
        InputError,
        match=r"image embeddings of .*other\.parquet have 16 dimensions, but the model.s image head takes 12",
    ):
        evaluate_corpus(trained_model, tmp_path / "other.parquet", device="cpu", progress=False)
