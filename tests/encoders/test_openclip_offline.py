"""An open_clip tag whose weights are neither cached nor fetchable fails at once, in one line."""

from __future__ import annotations

import time

import pytest

from cleanpairs.encoders import make_encoder
from cleanpairs.encoders.fetch import _hub_files, check_weights_available
from cleanpairs.errors import EncoderError

UNCACHED = {"hf_hub": "cleanpairs-tests/no-such-model/"}


def test_the_offline_flag_stops_an_uncached_tag_at_once(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(EncoderError, match=r"^open_clip weights A/t are not cached and HF_HUB_OFFLINE"):
        check_weights_available("A", "t", UNCACHED)
    assert time.perf_counter() - start < 1


def test_an_unreachable_host_stops_an_uncached_tag_within_seconds(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    start = time.perf_counter()
    cfg = {"url": "https://192.0.2.1/weights.pt"}  # TEST-NET-1: never answers
    with pytest.raises(EncoderError, match=r"not cached and 192\.0\.2\.1 cannot be reached"):
        check_weights_available("A", "t", cfg)
    assert time.perf_counter() - start < 10


def test_a_real_tag_offline_is_one_line_from_make_encoder(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EncoderError, match=r"ViT-B-32/laion2b_s34b_b79k are not cached and HF_HUB_OFFLINE"):
        make_encoder("openclip:ViT-B-32/laion2b_s34b_b79k", device="cpu")


def test_hub_file_names_follow_open_clip():
    assert _hub_files({"hf_hub": "org/model/"}) == (
        "org/model",
        ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"],
    )
    assert _hub_files({"hf_hub": "org/model/w.bin"}) == ("org/model", ["w.safetensors", "w.bin"])
