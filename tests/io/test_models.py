"""Model folders: heads saved and read back with their sizes and encoder, foreign folders refused,
search indexes kept per corpus."""

import json

import numpy as np
import pyarrow as pa
import pytest

from cleanpairs.core.candidates import build_index
from cleanpairs.core.training import HeadConfig, HeadTrainer
from cleanpairs.errors import InputError
from cleanpairs.io.models import (
    MODEL_FILE,
    SearchIndex,
    corpus_files_fingerprint,
    is_model_folder,
    load_index,
    load_model,
    save_index,
    save_model,
)
from cleanpairs.methods.base import PairEmbeddings


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
