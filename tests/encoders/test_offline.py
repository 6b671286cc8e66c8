import numpy as np
import torch

from cleanpairs.encoders.offline import load_efficientnet_lite0, preprocess
from cleanpairs.io.images import decode_image, read_image_bytes
from tests.conftest import FLICKR, flickr_slice


def test_real_photos_and_captions_embed_to_unit_vectors(offline_encoder):
    table = flickr_slice(2)
    paths = list(dict.fromkeys(table.column("image").to_pylist()))
    images = [decode_image(read_image_bytes(p)) for p in paths]
    emb = offline_encoder.encode_images(images)
    assert emb.shape == (2, 1280) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert np.allclose(offline_encoder.encode_images(images[:1]), emb[:1], atol=1e-5)
    texts = offline_encoder.encode_texts(table.column("caption").to_pylist()[:3])
    assert texts.shape == (3, 384)
    assert np.allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)


def test_shipped_imagenet_weights_recognise_dogs_in_real_photos():
    # Four Flickr8k train photos whose captions all speak of dogs.
    names = [
        "2513260012_03d33305cf",
        "2644326817_8f45080b87",
        "3338291921_fe7ae0c8f8",
        "488416045_1c6d903fe0",
    ]
    pixels = np.stack(
        [preprocess(decode_image(read_image_bytes(str(FLICKR / "images" / f"{n}.jpg")))) for n in names]
    )
    with torch.inference_mode():
        classes = load_efficientnet_lite0(with_classifier=True)(torch.from_numpy(pixels)).argmax(-1)
    assert all(151 <= c <= 268 for c in classes.tolist()), classes  # ImageNet's dog breeds
