"""The benchmark runner on a small synthetic corpus: rows, truth, resuming, bad settings."""

import math

import numpy as np
import pytest

from cleanpairs.bench import (
    BenchSetup,
    inject,
    method_params,
    noise_cases,
    resolve_methods,
    run_benchmark,
    run_key,
)
from cleanpairs.bench_report import aggregate, render_report
from cleanpairs.errors import ParameterError
from cleanpairs.methods import PairEmbeddings
from tests.methods.test_contract import synthetic_pairs


def clean_corpus(n_images=60, per_image=3):
    pairs, _ = synthetic_pairs(n_images=n_images, per_image=per_image, noise=0.0)
    return pairs


def test_injected_noise_is_the_truth_of_the_run():
    clean = clean_corpus()
    case = noise_cases(["complete:0.4"], [3])[0]
    noisy, noise = inject(clean, case)
    moved = ~noise.is_clean
    assert noise.noise_rate == pytest.approx(0.4, abs=0.03)
    assert np.array_equal(noisy.texts, clean.texts[noise.caption_source])
    assert not np.array_equal(noisy.texts[moved], clean.texts[moved])
    assert np.array_equal(noisy.texts[~moved], clean.texts[~moved])


def test_rows_measure_every_method_on_every_case_and_skip_what_is_done():
    clean = clean_corpus()
    cases = noise_cases(["shuffle:0.3", "complete:0.3"], [0, 1])
    setup = BenchSetup(["similarity"], {"similarity": {"epochs": 30, "batch_size": 32}}, evaluation=clean)
    seen = []
    rows = run_benchmark(
        clean, cases, setup, done={("similarity", "shuffle", 0.3, 1)}, on_row=lambda r, p, t: seen.append(r)
    )
    measured = [(r["method"], r["kind"], r["seed"]) for r in rows]
    # similarity on 3 cases (one was done), and the three references on every case.
    assert sum(m == "similarity" for m, _, _ in measured) == 3
    assert ("similarity", "shuffle", 1) not in measured
    assert all(sum(m == ref for m, _, _ in measured) == 4 for ref in ("unfiltered", "perfect", "clean"))
    assert seen == rows
    shuffle = next(r for r in rows if r["method"] == "similarity" and r["kind"] == "shuffle")
    assert 0.9 < shuffle["auroc"] <= 1.0 and shuffle["true_noise_rate"] == pytest.approx(0.3, abs=0.02)
    assert 0 <= shuffle["rematch_accuracy"] <= 1 and shuffle["heads_rsum"] > 0
    assert 0 < shuffle["downstream_rows"] < len(clean)
    clean_row = next(r for r in rows if r["method"] == "clean")
    unfiltered = next(r for r in rows if r["method"] == "unfiltered" and r["kind"] == "complete")
    assert (
        clean_row["downstream_rows"] == len(clean)
        and clean_row["downstream_rsum"] > unfiltered["downstream_rsum"]
    )
    # The perfect filter trains on exactly the pairs the noise left alone.
    perfect = next(r for r in rows if r["method"] == "perfect" and r["kind"] == "complete" and r["seed"] == 0)
    _, noise = inject(clean, cases[2])
    assert perfect["downstream_rows"] == noise.is_clean.sum() and perfect["true_noise_rate"] == 0.0


def test_a_resumed_benchmark_measures_only_the_references_it_lacks():
    clean = clean_corpus()
    case = noise_cases(["shuffle:0.3"], [0])[0]
    setup = BenchSetup(["similarity"], {"similarity": {"epochs": 30, "batch_size": 32}}, evaluation=clean)
    done = {(m, "shuffle", 0.3, 0) for m in ("similarity", "unfiltered", "clean")}
    rows = run_benchmark(clean, [case], setup, done=done)
    assert [r["method"] for r in rows] == ["perfect"]
    assert run_benchmark(clean, [case], setup, done={*done, ("perfect", "shuffle", 0.3, 0)}) == []


def test_report_averages_seeds_and_shows_the_spread():
    rows = [
        {"method": "ncr", "kind": "shuffle", "rate": 0.2, "seed": s, "auroc": a, "true_noise_rate": 0.2}
        for s, a in ((0, 0.90), (1, 0.96))
    ]
    (group,) = aggregate(rows)
    assert group["auroc"] == pytest.approx(0.93) and group["auroc_std"] == pytest.approx(0.03)
    assert math.isnan(group["ap"])
    text = render_report(rows, heading="H", description="D", export_thresh=0.15)
    assert "| shuffle 20% | ncr | 0.9300 ± 0.0300 | – |" in text
    assert "### Rematching" not in text


def test_report_shows_each_methods_worst_case_over_the_noise_cases():
    rows = [
        {"method": m, "kind": k, "rate": r, "seed": 0, "auroc": a, "true_noise_rate": r}
        for m, k, r, a in (
            ("ncr", "shuffle", 0.4, 0.99), ("ncr", "complete", 0.4, 0.90),
            ("crcl", "shuffle", 0.4, 0.98), ("crcl", "complete", 0.4, 0.96),
            ("l2rm", "shuffle", 0.4, 0.97),
        )
    ]  # fmt: skip
    text = render_report(rows, heading="H", description="D", export_thresh=0.15)
    assert "| method | shuffle 40% | complete 40% | worst case |" in text
    assert "| ncr | **0.9900** | 0.9000 | 0.9000 |" in text
    assert "| crcl | 0.9800 | **0.9600** | 0.9600 |" in text
    assert "| l2rm | 0.9700 | – | 0.9700 (of the cases run) |" in text


def test_bad_benchmark_settings_say_what_is_allowed():
    with pytest.raises(ParameterError, match="KIND:RATE"):
        noise_cases(["0.2"], [0])
    with pytest.raises(ParameterError, match="at least one seed"):
        noise_cases(["shuffle:0.2"], [])
    with pytest.raises(ParameterError, match="METHOD.NAME=VALUE"):
        method_params({"epochs": "3"})
    with pytest.raises(ParameterError, match="unknown method"):
        resolve_methods(["nope"], have_trusted=False)
    with pytest.raises(ParameterError, match="mscn learns from a trusted set"):
        resolve_methods(["mscn"], have_trusted=False)
    methods, skipped = resolve_methods(["all"], have_trusted=False)
    assert "mscn" in skipped and "mscn" not in methods and "ncr" in methods
    assert run_key({"method": "a", "kind": "shuffle", "rate": "0.2", "seed": "1"}) == ("a", "shuffle", 0.2, 1)


def test_pair_embeddings_are_untouched_by_a_run():
    clean = clean_corpus(30)
    before = clean.texts.copy()
    setup = BenchSetup(["similarity"], {"similarity": {"epochs": 5, "batch_size": 16}}, rematch=False)
    run_benchmark(clean, noise_cases(["shuffle:0.5"], [0]), setup)
    assert np.array_equal(clean.texts, before) and isinstance(clean, PairEmbeddings)


def test_resuming_may_add_methods_but_not_change_what_was_measured(tmp_path):
    from cleanpairs.bench import resumable_settings

    old = {"encoder": "offline", "thresh": 0.5, "params": {"ncr": {"epochs": 6}}}
    added = {"encoder": "offline", "thresh": 0.5, "params": {"ncr": {"epochs": 6}, "tsvc": {"epochs": 5}}}
    assert resumable_settings(old, added, tmp_path)["params"] == added["params"]
    with pytest.raises(ParameterError, match=r"other settings \(ncr parameters\)"):
        resumable_settings(old, {**added, "params": {"ncr": {"epochs": 3}}}, tmp_path)
    with pytest.raises(ParameterError, match=r"other settings \(thresh\)"):
        resumable_settings(old, {**old, "thresh": 0.7}, tmp_path)


def test_a_method_that_keeps_nothing_leaves_a_gap_not_an_error():
    clean = clean_corpus(30)
    setup = BenchSetup(["similarity"], evaluation=clean, thresh=1.0, rematch=False)
    (row, *_) = run_benchmark(clean, noise_cases(["shuffle:0.3"], [0]), setup)
    assert row["method"] == "similarity"
    assert row["downstream_rows"] == 0 and math.isnan(row["downstream_rsum"])
