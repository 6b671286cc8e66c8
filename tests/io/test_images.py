"""Images read with a reason when they cannot be: decompression bombs refused from their header,
under a pixel limit set per call and never by raising Pillow's limit for the process."""

import warnings

import pytest
from PIL import Image

from cleanpairs.errors import ParameterError
from cleanpairs.io.images import (
    DEFAULT_MAX_PIXELS,
    ImageProblem,
    check_max_pixels,
    decode_image,
    read_image_bytes,
)
from tests.conftest import write_blank_png


@pytest.fixture(scope="module")
def huge_png(tmp_path_factory):
    """A real 15,000 x 15,000 PNG of one colour (27 kB on disk, 225 megapixels decoded)."""
    return write_blank_png(tmp_path_factory.mktemp("images") / "huge.png", 15_000, 15_000).read_bytes()


def test_pillows_limit_is_the_default_and_is_left_as_it_is():
    assert DEFAULT_MAX_PIXELS == Image.MAX_IMAGE_PIXELS == check_max_pixels(None)


def test_a_decompression_bomb_is_refused_from_its_header(huge_png):
    with pytest.raises(ImageProblem) as refused:
        decode_image(huge_png)
    assert str(refused.value) == "image too large (225000000 pixels, limit 89478485)"
    assert Image.MAX_IMAGE_PIXELS == DEFAULT_MAX_PIXELS


def test_between_pillows_limit_and_twice_it_the_image_is_refused_without_a_warning(tmp_path):
    # Pillow warns (not raises) from 89.5 to 179 megapixels; a warning would reach the user's terminal.
    data = write_blank_png(tmp_path / "big.png", 10_000, 10_000).read_bytes()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ImageProblem, match=r"^image too large \(100000000 pixels, limit 89478485\)$"):
            decode_image(data)
    assert [w.message for w in caught] == []


def test_the_limit_is_per_call(tmp_path):
    data = write_blank_png(tmp_path / "small.png", 30, 20).read_bytes()
    assert decode_image(data, max_pixels=600).size == (30, 20)
    with pytest.raises(ImageProblem, match=r"^image too large \(600 pixels, limit 599\)$"):
        decode_image(data, max_pixels=599)
    picture = decode_image(data)
    assert picture.mode == "RGB" and picture.getpixel((0, 0)) == (0, 0, 0)
    assert Image.MAX_IMAGE_PIXELS == DEFAULT_MAX_PIXELS


@pytest.mark.parametrize("value", [0, -5, True, 2.5, DEFAULT_MAX_PIXELS + 1])
def test_a_bad_limit_or_one_above_pillows_is_refused(value):
    with pytest.raises(ParameterError, match=r"^--max-image-pixels must be"):
        check_max_pixels(value)


def test_undecodable_bytes_give_the_same_status_every_run():
    # Pillow's own message names a memory address, which would make cp_status differ run to run.
    messages = []
    for _ in range(2):
        with pytest.raises(ImageProblem) as refused:
            decode_image(b"not an image at all")
        messages.append(str(refused.value))
    assert messages == ["image cannot be decoded: not an image format Pillow reads"] * 2


def test_a_truncated_image_is_a_decode_problem(tmp_path):
    data = write_blank_png(tmp_path / "cut.png", 200, 200).read_bytes()
    with pytest.raises(ImageProblem, match="^image cannot be decoded: "):
        decode_image(data[: len(data) // 2])


def test_references_that_are_no_image_say_why(tmp_path):
    with pytest.raises(ImageProblem, match="^image path is a folder: "):
        read_image_bytes(str(tmp_path))
    with pytest.raises(ImageProblem, match="^image is neither a path nor bytes but int$"):
        read_image_bytes(7)  # type: ignore[arg-type]
    with pytest.raises(ImageProblem, match="^image file not found: "):
        read_image_bytes(str(tmp_path / "gone.jpg"))
