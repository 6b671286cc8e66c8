"""MSCN: it refuses to run without trusted pairs, and with them it finds shuffled captions
among real photos better than the plain similarity does."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from cleanpairs.encoders import embed_corpus
from cleanpairs.errors import ParameterError
from cleanpairs.io.tables import read_pairs
from cleanpairs.methods import get_method
from cleanpairs.metrics import detection_metrics
from cleanpairs.pipeline import fit_method
from tests.conftest import flickr_slice, with_shuffled_captions
from tests.methods.test_contract import synthetic_pairs

# The slice of tests/methods/test_on_flickr.py: 150 train photos, 40% of captions shuffled.
SMALL = {"batch_size": 64, "warmup_epochs": 1, "epochs": 2}
AUROC_FLOOR = 0.85


def _embed(table, path, cache_dir):
    pq.write_table(table, path)
    return embed_corpus(read_pairs(path), "offline", cache_dir=cache_dir, device="cpu", progress=False)


@pytest.fixture(scope="module")
def noisy_slice(tmp_path_factory, cache_dir):
    table = with_shuffled_captions(flickr_slice(150, offset=300), 0.4, seed=1)
    embedded = _embed(table, tmp_path_factory.mktemp("mscn-slice") / "pairs.parquet", cache_dir)
    return embedded.pairs, np.asarray(table.column("is_clean").to_pylist())[embedded.rows]


@pytest.fixture(scope="module")
def trusted(tmp_path_factory, cache_dir):
    """100 clean pairs (20 photos x 5 captions) of Flickr8k dev, embedded like the corpus."""
    table = flickr_slice(20, split="dev")
    return _embed(table, tmp_path_factory.mktemp("mscn-trusted") / "trusted.parquet", cache_dir).pairs


def _fit(pairs, trusted, seed=0):
    return get_method("mscn")(seed=seed, device="cpu", **SMALL).fit(pairs, trusted).score()


def test_without_a_trusted_set_it_says_so():
    pairs, _ = synthetic_pairs()
    with pytest.raises(ParameterError, match="mscn learns from a trusted set of clean pairs"):
        get_method("mscn")(device="cpu").fit(pairs)


def test_it_finds_shuffled_captions_better_than_the_similarity(noisy_slice, trusted):
    pairs, clean = noisy_slice
    assert len(trusted) == 100
    scores = _fit(pairs, trusted)
    baseline = fit_method(pairs, "similarity", {"batch_size": 64}, seed=0, device="cpu")[0]
    ours = detection_metrics(scores.p_clean, clean)["auroc"]
    theirs = detection_metrics(baseline.p_clean, clean)["auroc"]
    assert ours > AUROC_FLOOR, ours
    assert ours > theirs, (ours, theirs)
    assert detection_metrics(scores.soft_label, clean)["auroc"] > AUROC_FLOOR
    again = _fit(pairs, trusted)
    for name in ("p_clean", "soft_label", "similarity"):
        assert np.array_equal(getattr(again, name), getattr(scores, name)), name


@pytest.fixture(scope="module")
def high_noise_slice(tmp_path_factory, cache_dir):
    table = with_shuffled_captions(flickr_slice(150, offset=300), 0.6, seed=1)
    embedded = _embed(table, tmp_path_factory.mktemp("mscn-high") / "pairs.parquet", cache_dir)
    return embedded.pairs, np.asarray(table.column("is_clean").to_pylist())[embedded.rows]


def test_at_high_noise_its_split_does_not_collapse(high_noise_slice, trusted):
    """At 60% shuffled captions, over several epochs, the split keeps most of the clean pairs and
    does not call nearly everything noisy: the heads' drift used to pile the meta-net's scores at
    0 and 1, where the beta mixture turned U-shaped and its noisy component took the top
    (on this slice it then kept no pair: 78% estimated noise, AUROC 0.74 after 6 epochs)."""
    pairs, clean = high_noise_slice
    scores = get_method("mscn")(seed=0, device="cpu", **{**SMALL, "epochs": 6}).fit(pairs, trusted).score()
    metrics = detection_metrics(scores.p_clean, clean)
    kept = int((scores.p_clean >= 0.5).sum())
    assert kept >= 0.8 * clean.sum(), (kept, int(clean.sum()))
    assert metrics["estimated_noise_rate"] < metrics["true_noise_rate"] + 0.1, metrics
    assert metrics["auroc"] > 0.78, metrics


def test_one_network_alone_still_runs_and_two_detect_no_worse(noisy_slice, trusted):
    """``networks=1`` is the single network of before; the paper's two networks, each training on
    the pairs its peer took as clean, rank the slice's shuffled captions at least as well by the
    paper's split (``agreement=0``). With caption agreement the slice is too small to tell: one
    network 0.979, two 0.967 here, where on Flickr8k train two rank better in every case measured
    (docs/methods.md, mscn)."""
    pairs, clean = noisy_slice
    paper = {**SMALL, "agreement": 0.0}
    one = get_method("mscn")(seed=0, device="cpu", **paper, networks=1).fit(pairs, trusted).score()
    two = get_method("mscn")(seed=0, device="cpu", **paper).fit(pairs, trusted).score()
    auroc_one = detection_metrics(one.p_clean, clean)["auroc"]
    auroc_two = detection_metrics(two.p_clean, clean)["auroc"]
    assert auroc_one > AUROC_FLOOR, auroc_one
    assert auroc_two >= auroc_one - 0.005, (auroc_one, auroc_two)


def test_caption_agreement_lifts_the_purification(noisy_slice, trusted):
    """The other captions of an image vote in every purification and in the final split."""
    pairs, clean = noisy_slice
    paper = get_method("mscn")(seed=0, device="cpu", **SMALL, agreement=0.0).fit(pairs, trusted).score()
    ours = _fit(pairs, trusted)
    gain = detection_metrics(ours.p_clean, clean)["auroc"] - detection_metrics(paper.p_clean, clean)["auroc"]
    assert gain > 0.004, gain


def test_a_scorer_saved_with_one_network_before_the_two_still_applies():
    from tests.methods.test_contract import halves

    (fit, _), (held_out, _), trusted = halves()
    scorer = get_method("mscn")(seed=0, device="cpu", epochs=1, warmup_epochs=1, networks=1).fit(fit, trusted)
    manifest, tensors = scorer.fitted_state()
    # The layout of before: one network's modules named image/text/meta, its split p_clean.
    old_names = {"m0.image": "image", "m0.text": "text", "m0.meta": "meta", "m0": "p_clean"}

    def renamed(name: str) -> str:
        kind, _, rest = name.partition(".")
        for new, old in old_names.items():
            if rest == new or rest.startswith(new + "."):
                return f"{kind}.{old}{rest[len(new):]}"
        return name

    old_manifest = {
        **manifest,
        "params": {k: v for k, v in manifest["params"].items() if k != "networks"},
        "modules": {old_names[k]: v for k, v in manifest["modules"].items()},
        "splits": {old_names[k]: v for k, v in manifest["splits"].items()},
    }
    old = get_method("mscn").from_fitted_state(old_manifest, {renamed(k): v for k, v in tensors.items()})
    assert np.array_equal(old.score_pairs(held_out).p_clean, scorer.score_pairs(held_out).p_clean)
