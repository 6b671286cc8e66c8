"""Scorer folders: a fitted state written as JSON + weights-only tensors, and one line for each way
a folder can be unusable."""

import json

import numpy as np
import pytest
import torch

import cleanpairs
from cleanpairs.errors import InputError
from cleanpairs.io.scorers import (
    MANIFEST_FILE,
    SCORER_FORMAT_VERSION,
    TENSORS_FILE,
    load_scorer_files,
    save_scorer,
)
from cleanpairs.methods import load_scorer

MANIFEST = {"method": "similarity", "params": {"epochs": 2}, "seed": 3, "sizes": {"d_image": 4, "d_text": 4}}


def saved(tmp_path):
    tensors = {"modules.image.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3),
               "splits.p.knots": np.array([0.1, 0.2 + 1e-17, 1 / 3])}
    return save_scorer(tmp_path / "scorer", MANIFEST, tensors)


def test_a_saved_scorer_reads_back_as_plain_data(tmp_path):
    folder = saved(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == [MANIFEST_FILE, TENSORS_FILE]
    manifest, tensors = load_scorer_files(folder)
    assert {k: manifest[k] for k in MANIFEST} == MANIFEST
    assert manifest["format_version"] == SCORER_FORMAT_VERSION
    assert manifest["version"] == cleanpairs.__version__
    assert torch.equal(tensors["modules.image.weight"], torch.arange(6, dtype=torch.float32).reshape(2, 3))
    # float64 arrays keep every bit (the mixtures' knots are compared exactly).
    assert tensors["splits.p.knots"].dtype == torch.float64
    assert np.array_equal(tensors["splits.p.knots"].numpy(), np.array([0.1, 0.2 + 1e-17, 1 / 3]))


def test_saving_again_replaces_the_scorer_and_never_a_foreign_folder(tmp_path):
    folder = saved(tmp_path)
    save_scorer(folder, {**MANIFEST, "seed": 4}, {})
    assert load_scorer_files(folder)[0]["seed"] == 4 and load_scorer_files(folder)[1] == {}
    assert [p.name for p in tmp_path.iterdir()] == ["scorer"]  # no temporary folder left beside it
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "a.jpg").write_bytes(b"x")
    with pytest.raises(InputError, match="holds files that are not a cleanpairs scorer"):
        save_scorer(foreign, MANIFEST, {})
    with pytest.raises(InputError, match="lacks 'sizes'"):
        save_scorer(tmp_path / "new", {k: v for k, v in MANIFEST.items() if k != "sizes"}, {})
    with pytest.raises(InputError, match="cannot be written as JSON"):
        save_scorer(tmp_path / "new", {**MANIFEST, "scalars": {"rate": float("nan")}}, {})
    assert not (tmp_path / "new").exists()


def test_a_version_1_scorer_still_reads(tmp_path):
    folder = saved(tmp_path)
    rewrite_manifest(lambda m: m.update(format_version=1))(folder)
    assert load_scorer_files(folder)[0]["format_version"] == 1


def rewrite_manifest(change):
    def spoil(folder):
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        change(manifest)
        (folder / MANIFEST_FILE).write_text(json.dumps(manifest))

    return spoil


def write(name, content):
    return lambda folder: (folder / name).write_text(content)


SPOILED = [
    (write(MANIFEST_FILE, "{not json"), "scorer.json is not valid JSON"),
    (write(MANIFEST_FILE, "[1, 2]"), "is not a cleanpairs scorer manifest"),
    (rewrite_manifest(lambda m: m.update(format_version=99)), "format version 99; this cleanpairs"),
    (rewrite_manifest(lambda m: m.pop("params")), "lacks the field 'params'"),
    (lambda f: (f / TENSORS_FILE).unlink(), "not a complete scorer folder: it has no tensors.pt"),
    (write(TENSORS_FILE, "garbage"), "refused by weights-only loading: it is not a torch tensor file"),
    (
        lambda f: torch.save({"x": np.zeros(2)}, f / TENSORS_FILE),
        r"refused by weights-only loading: it holds numpy\S+, not only tensors",
    ),
    (lambda f: torch.save({"x": [torch.zeros(1)]}, f / TENSORS_FILE), "does not hold named tensors"),
]


@pytest.mark.parametrize(("spoil", "message"), SPOILED)
def test_an_unusable_folder_is_one_line(tmp_path, spoil, message):
    folder = saved(tmp_path)
    spoil(folder)
    with pytest.raises(InputError, match=message) as caught:
        load_scorer_files(folder)
    assert "\n" not in str(caught.value)


def test_a_missing_folder_or_manifest_is_one_line(tmp_path):
    with pytest.raises(InputError, match="no such scorer folder"):
        load_scorer_files(tmp_path / "absent")
    folder = saved(tmp_path)
    (folder / MANIFEST_FILE).unlink()
    with pytest.raises(InputError, match="is not a cleanpairs scorer folder: it has no scorer.json"):
        load_scorer_files(folder)


def test_load_scorer_names_a_method_it_does_not_know(tmp_path):
    folder = save_scorer(tmp_path / "s", {**MANIFEST, "method": "clip-filter"}, {})
    with pytest.raises(InputError, match="unknown method 'clip-filter'; available: .*similarity"):
        load_scorer(folder, device="cpu")


def test_load_scorer_says_what_a_fitted_state_lacks(tmp_path):
    folder = save_scorer(tmp_path / "s", MANIFEST, {})
    with pytest.raises(InputError, match="the fitted similarity scorer cannot be rebuilt: lacks 'modules'"):
        load_scorer(folder, device="cpu")
