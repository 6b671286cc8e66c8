"""`cleanpairs train`, `eval` and `search` on real photos, and their refusals."""

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cleanpairs.cli.main import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_refused(result, message):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


@pytest.fixture(scope="module")
def scores(noisy_flickr, cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("retrieval-cli") / "scores.parquet"
    result = invoke(
        "score", noisy_flickr, "-o", out, "--method", "similarity", "--rematch",
        "--cache-dir", cache_dir, "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def model(scores, cache_dir):
    folder = scores.with_name("model")
    result = invoke(
        "train",
        scores,
        "--thresh",
        0.5,
        "--rematch",
        "-o",
        folder,
        "--cache-dir",
        cache_dir,
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    kept = sum(p is not None and p >= 0.5 for p in pq.read_table(scores).column("cp_p_clean").to_pylist())
    assert "with cp_p_clean >= 0.5 + " in result.stdout and f"({kept} with" in result.stdout
    assert "epochs in" in result.stdout and "encoder offline" in result.stdout
    return folder


def test_eval_prints_recall_both_ways_and_rsum(model, small_flickr, cache_dir):
    result = invoke("eval", model, small_flickr, "--cache-dir", cache_dir, "--device", "cpu")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "60 captions of 12 images"
    assert lines[1].split() == ["R@1", "R@5", "R@10"]
    i2t, t2i = lines[2].split(), lines[3].split()
    assert i2t[0] == "image->text" and t2i[0] == "text->image"
    recalls = [float(x) for x in i2t[1:] + t2i[1:]]
    assert all(0 <= r <= 100 for r in recalls) and recalls[5] > 10 / 12 * 100 - 1e-9
    assert recalls[0] <= recalls[1] <= recalls[2] and recalls[3] <= recalls[4] <= recalls[5]
    assert lines[4].startswith("rSum ") and float(lines[4].split()[1]) == pytest.approx(sum(recalls), abs=0.3)


def test_search_builds_the_index_once(model, cache_dir, noisy_flickr):
    caption = pq.read_table(noisy_flickr).column("caption")[0].as_py()
    first = invoke("search", model, "--text", caption, "-k", 3, "--cache-dir", cache_dir, "--device", "cpu")
    assert first.exit_code == 0, first.output
    lines = first.stdout.splitlines()
    assert lines[0].startswith("3 nearest of 60 images in ") and lines[0].endswith("(index built and saved)")
    ranks = [line.split()[:2] for line in lines[1:]]
    assert [r[0] for r in ranks] == ["1", "2", "3"] and all(line.endswith(".jpg") for line in lines[1:])
    photo = lines[1].split()[-1]
    again = invoke("search", model, "--image", photo, "--cache-dir", cache_dir, "--device", "cpu")
    assert again.exit_code == 0, again.output
    assert again.stdout.splitlines()[0].startswith("5 nearest of 300 captions")
    assert again.stdout.splitlines()[0].endswith("(saved index)")
    assert len(again.stdout.splitlines()) == 6


def test_bad_input_is_one_line_exit_2_and_writes_nothing(scores, model, noisy_flickr, tmp_path):
    assert_refused(invoke("train", tmp_path / "none.parquet", "-o", tmp_path / "m"), "no such file")
    assert_refused(invoke("train", noisy_flickr, "-o", tmp_path / "m"), "not a scores file")
    assert_refused(invoke("train", scores, "--thresh", 1.0, "-o", tmp_path / "m"), "lower the threshold")
    assert_refused(invoke("train", scores, "--thresh", 2, "-o", tmp_path / "m"), "--thresh must be within")
    assert_refused(invoke("train", scores, "--epochs", 0, "-o", tmp_path / "m"), "'epochs' parameter")
    assert_refused(invoke("eval", tmp_path / "m", noisy_flickr), "no such model folder")
    assert_refused(invoke("eval", tmp_path, noisy_flickr), "is not a cleanpairs model folder")
    assert_refused(invoke("search", model, "--text", "a dog", "--image", "x.jpg"), "exactly one query")
    assert_refused(invoke("search", model), "exactly one query")
    assert_refused(invoke("search", tmp_path / "m", "--text", "a dog"), "no such model folder")
    assert_refused(invoke("search", model, "--image", tmp_path / "none.jpg"), "image file not found")
    assert list(tmp_path.iterdir()) == []
