import json

import numpy as np
import open_clip
import pyarrow.parquet as pq
import pytest
import torch

from cleanpairs.encoders import make_encoder
from cleanpairs.errors import EncoderError
from cleanpairs.pipeline import score_corpus
from tests.conftest import flickr_slice

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 1, "width": 64, "head_width": 32, "patch_size": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A tiny randomly initialised CLIP, saved as a local checkpoint with its config beside it."""
    folder = tmp_path_factory.mktemp("clip")
    (folder / "cp-tiny-clip.json").write_text(json.dumps(TINY))
    open_clip.add_model_config(folder / "cp-tiny-clip.json")
    torch.manual_seed(0)
    model = open_clip.create_model("cp-tiny-clip")
    torch.save({"state_dict": model.state_dict()}, folder / "tiny.pt")
    return folder / "tiny.pt"


def test_local_checkpoint_encodes_into_one_space(tiny_checkpoint):
    encoder = make_encoder(f"openclip:cp-tiny-clip:{tiny_checkpoint}", device="cpu")
    assert encoder.aligned
    from PIL import Image

    images = encoder.encode_images([Image.new("RGB", (80, 60), (200, 10, 10))])
    texts = encoder.encode_texts(["a red picture", "a dog"])
    assert images.shape == (1, 32) and texts.shape == (2, 32)
    assert np.allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)


def test_score_with_a_local_checkpoint_uses_the_encoder_cosine(tiny_checkpoint, tmp_path):
    pq.write_table(flickr_slice(4, offset=200), tmp_path / "pairs.parquet")
    run = score_corpus(
        tmp_path / "pairs.parquet",
        encoder=f"openclip:cp-tiny-clip:{tiny_checkpoint}",
        method="similarity",
        cache_dir=tmp_path / "cache",
        device="cpu",
        progress=False,
    )
    out = pq.read_table(run.output)
    assert run.meta.encoder.startswith("openclip:cp-tiny-clip:")
    sims = out.column("cp_similarity").to_numpy()
    assert out.num_rows == 20 and np.all(np.abs(sims) <= 1.0 + 1e-5)
    assert run.meta.params["train_heads"] == "auto" and "encoded" in run.meta.extra


def test_missing_checkpoint_and_unknown_tag_are_clear_errors(tmp_path):
    with pytest.raises(EncoderError, match="checkpoint not found"):
        make_encoder(f"openclip:ViT-B-32:{tmp_path / 'none.pt'}")
    with pytest.raises(EncoderError, match="cannot load open_clip model 'RN50'"):
        make_encoder("openclip:RN50/no-such-tag")
    with pytest.raises(EncoderError, match="unknown encoder"):
        make_encoder("clip")
