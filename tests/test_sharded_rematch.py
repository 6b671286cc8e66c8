"""Rematching across the shards of a folder run: the flagged pairs of every shard matched at
once, the partners written into each scores shard, resumable, the same on the Ray engine."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cleanpairs.errors import InputError
from cleanpairs.pipeline import score_corpus
from cleanpairs.sharded import RUN_FILE, score_shards
from cleanpairs.sharded_rematch import MATCHES, REMATCH_FOLDER, REMATCH_MARKER_SUFFIX
from tests.conftest import flickr_slice, with_shuffled_captions
from tests.test_sharded import OPTIONS, files, noisy_shards

CLEANPAIRS = Path(sys.executable).parent / "cleanpairs"
FLICKR_CACHE = Path("/work/.flk-cache")
REMATCH = ["cp_rematch_key", "cp_rematch_score"]


def flickr_shards(folder: Path, cuts: list[int]) -> pa.Table:
    """60 Flickr8k photos x 5 captions, 40% of the captions shuffled across the whole corpus,
    cut into shards at ``cuts`` (rows); the table, with each caption's own image, is returned."""
    table = with_shuffled_captions(flickr_slice(60), 0.4, seed=0, source=True)
    folder.mkdir(parents=True)
    bounds = [0, *cuts, table.num_rows]
    for s, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        pq.write_table(table.slice(lo, hi - lo), folder / f"{s:05d}.parquet")
    return table


def scored(folder: Path, shards: int) -> pa.Table:
    return pa.concat_tables([pq.read_table(folder / f"{s:05d}.parquet") for s in range(shards)])


def right_partners(table: pa.Table, out: pa.Table) -> list[bool]:
    """For each rematched pair: is the proposed caption one written for the pair's image?"""
    written_for = dict(zip(table.column("key").to_pylist(), table.column("caption_image_id").to_pylist(),
                           strict=True))  # fmt: skip
    return [written_for[partner] == image for partner, image in
            zip(out.column("cp_rematch_key").to_pylist(), out.column("image_id").to_pylist(), strict=True)
            if partner is not None]  # fmt: skip


FLICKR = {"method": "ncr", "params": {"epochs": 3}, "device": "cpu", "progress": False}


@pytest.fixture(scope="module")
def cache() -> Path:
    if not FLICKR_CACHE.is_dir():
        pytest.skip("the embedding cache of Flickr8k train is expected at /work/.flk-cache")
    return FLICKR_CACHE


def test_shards_cut_between_images_give_the_one_file_rematch(tmp_path, cache):
    table = flickr_shards(tmp_path / "in", cuts=[100, 200])
    pq.write_table(table, tmp_path / "one.parquet")
    one = score_corpus(tmp_path / "one.parquet", tmp_path / "one.scores.parquet", rematch=True,
                       cache_dir=cache, **FLICKR)  # fmt: skip
    run = score_shards(tmp_path / "in", tmp_path / "out", rematch=True, cache_dir=cache, **FLICKR)
    assert run.rematch == one.meta.extra["rematch"]
    assert run.rematch["rematched"] > 40
    whole, shards = pq.read_table(one.output), scored(tmp_path / "out", 3)
    for name in REMATCH:
        assert shards.column(name).combine_chunks().equals(whole.column(name).combine_chunks()), name
    right = right_partners(table, shards)
    assert np.mean(right) > 0.9, np.mean(right)
    # The true partners sit in other shards as often as not: the match crosses shards.
    shard_of = {k: i // 100 for i, k in enumerate(table.column("key").to_pylist())}
    crossing = [shard_of[p] != i // 100 for i, p in enumerate(shards.column("cp_rematch_key").to_pylist())
                if p is not None]  # fmt: skip
    assert np.mean(crossing) > 0.4
    meta = json.loads(pq.read_table(tmp_path / "out" / "00001.parquet").schema.metadata[b"cleanpairs"])
    assert meta["extra"]["rematch"] == run.rematch


def test_a_fit_on_a_sample_rematches_across_shards_that_cut_through_images(tmp_path, cache):
    table = flickr_shards(tmp_path / "in", cuts=[77, 151, 222])
    run = score_shards(tmp_path / "in", tmp_path / "out", rematch=True, fit_pairs=200, cache_dir=cache,
                       **FLICKR)  # fmt: skip
    assert run.fit_pairs == 200 and run.rematch["rematched"] > 30
    assert np.mean(right_partners(table, scored(tmp_path / "out", 4))) > 0.85
    # align=auto trains this sample fit in the corpus alignment's space, whose ridge grows on a
    # corpus of fewer pairs (300) than encoder dimensions (1,664); with the plain ridge it
    # flagged 23 of the 120 shuffled captions and rematched 12.
    assert json.loads((tmp_path / "out" / RUN_FILE).read_text())["fit_info"]["align"]["aligned"]


def test_a_run_resumed_in_the_rematch_step_writes_what_an_uninterrupted_run_writes(tmp_path):
    shards = noisy_shards(tmp_path / "in", shards=3)
    settings = {"method": "ncr", "params": {"epochs": 2}, "rematch": True, **OPTIONS}
    run = score_shards(shards, tmp_path / "out", **settings)
    assert run.rematch["rematched"] > 0
    reference = files(tmp_path / "out")
    # A run stopped after matching and one shard's columns: the matches are kept, two shards left.
    for name in ("00001", "00002"):
        (tmp_path / "out" / f"{name}{REMATCH_MARKER_SUFFIX}").unlink()
    again = score_shards(shards, tmp_path / "out", **settings)
    assert (again.scored_shards, again.rematch) == (0, run.rematch)
    assert files(tmp_path / "out") == reference
    # A run stopped before the matches were saved matches again, with the same result.
    (tmp_path / "out" / REMATCH_FOLDER / MATCHES).unlink()
    (tmp_path / "out" / f"00000{REMATCH_MARKER_SUFFIX}").unlink()
    score_shards(shards, tmp_path / "out", **settings)
    assert files(tmp_path / "out") == reference


def _cli(*args: object, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([str(CLEANPAIRS), *map(str, args)], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


@pytest.mark.parametrize("kill_when", ["flagged", "matched"])
def test_kill_9_then_the_same_command_gives_the_uninterrupted_output(tmp_path, kill_when):
    shards = noisy_shards(tmp_path / "in", shards=8, images=30)
    args = ["score", shards, "--encoder", "precomputed", "--method", "similarity", "--fit-pairs", "300",
            "--device", "cpu", "--no-progress", "--rematch"]  # fmt: skip
    done = _cli(*args, "-o", tmp_path / "reference", cwd=tmp_path)
    assert done.wait(timeout=300) == 0, done.stderr.read()
    out = tmp_path / "out"
    sign = out / REMATCH_FOLDER / ("00000" if kill_when == "flagged" else MATCHES)
    killed = _cli(*args, "-o", out, cwd=tmp_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and killed.poll() is None and not sign.exists():
        time.sleep(0.002)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert len(list(out.glob(f"*{REMATCH_MARKER_SUFFIX}"))) < 8, "the run finished before it could be killed"
    resumed = _cli(*args, "-o", out, cwd=tmp_path)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    assert "across shards" in resumed.stdout.read()
    assert files(out) == files(tmp_path / "reference")
    assert not [p for p in out.rglob("*") if "tmp" in p.name]


def test_the_ray_engine_rematches_as_the_local_engine_does(tmp_path):
    pytest.importorskip("ray", reason="the ray extra is not installed")
    shards = noisy_shards(tmp_path / "in", shards=3)
    settings = {"method": "ncr", "fit_pairs": 100, "params": {"epochs": 2}, "rematch": True, **OPTIONS}
    local = score_shards(shards, tmp_path / "local", **settings)
    run = score_shards(shards, tmp_path / "ray", engine="ray", **settings)
    assert run.rematch == local.rematch and run.rematch["rematched"] > 0
    assert files(tmp_path / "ray") == files(tmp_path / "local")


def test_a_folder_scored_without_rematch_is_not_resumed_with_it(tmp_path):
    shards = noisy_shards(tmp_path / "in", shards=2)
    score_shards(shards, tmp_path / "out", method="similarity", **OPTIONS)
    with pytest.raises(InputError) as err:
        score_shards(shards, tmp_path / "out", method="similarity", rematch=True, **OPTIONS)
    assert "holds shards of another run (rematch differs" in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_rematch_settings_for_a_folder_are_one_line_and_write_nothing(tmp_path):
    shards = noisy_shards(tmp_path / "in", shards=2)
    done = subprocess.run([str(CLEANPAIRS), "score", shards, "--encoder", "precomputed", "-o",
                           tmp_path / "out", "--rematch", "--rematch-mass", "2", "--no-progress"],
                          capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "mass" in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()


def test_apply_rematches_new_shards_with_a_saved_scorer(tmp_path):
    shards = noisy_shards(tmp_path / "in", shards=3)
    run = [str(CLEANPAIRS), "score", shards, "--encoder", "precomputed", "--method", "ncr", "--param",
           "epochs=2", "-o", tmp_path / "fit", "--save-scorer", tmp_path / "scorer", "--device", "cpu",
           "--no-progress"]  # fmt: skip
    assert subprocess.run(run, capture_output=True, cwd=tmp_path).returncode == 0
    done = subprocess.run([str(CLEANPAIRS), "apply", tmp_path / "scorer", shards, "-o", tmp_path / "applied",
                           "--rematch", "--device", "cpu", "--no-progress"],
                          capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "across shards" in done.stdout
    partners = scored(tmp_path / "applied", 3).column("cp_rematch_key").drop_null()
    assert len(partners) > 0
