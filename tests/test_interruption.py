"""``kill -9`` at a random moment of ``score`` (one file) and ``train``: the target is absent or
whole, never partial, and the same command again gives what an uninterrupted run gives.
(``export`` and ``filter`` are killed in tests/test_data_safety.py, a sharded ``score`` in
tests/test_sharded.py.)"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from tests.test_sharded import noisy_shards

CLEANPAIRS = Path(sys.executable).parent / "cleanpairs"


def _kill_at_random(args: list, seconds: float, seed: int) -> None:
    """Start the command, kill it with SIGKILL after a random share of ``seconds``."""
    command = [str(CLEANPAIRS), *map(str, args)]
    run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(np.random.default_rng(seed).uniform(0.2, 0.95) * seconds)
    run.send_signal(signal.SIGKILL)
    run.wait()


def _timed(args: list) -> float:
    start = time.monotonic()
    done = subprocess.run([str(CLEANPAIRS), *map(str, args)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return time.monotonic() - start


def _no_temporaries(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if "cleanpairs-tmp" in p.name or ".old-" in p.name]


def test_score_killed_at_a_random_moment(tmp_path, seed=0):
    shards = noisy_shards(tmp_path / "in", shards=1, images=60)
    corpus = shards / "00000.parquet"
    args = ["score", corpus, "--encoder", "precomputed", "--method", "ncr", "--param", "epochs=4",
            "--device", "cpu", "--no-progress"]  # fmt: skip
    seconds = _timed([*args, "-o", tmp_path / "reference.parquet"])
    target = tmp_path / "scores.parquet"
    _kill_at_random([*args, "-o", target], seconds, seed)
    if target.exists():  # finished before the kill: then it is whole
        assert pq.read_table(target).num_rows == 180
    _timed([*args, "-o", target])
    assert not _no_temporaries(tmp_path)
    cp = ["cp_p_clean", "cp_soft_label", "cp_similarity", "cp_status"]
    assert pq.read_table(target, columns=cp).equals(pq.read_table(tmp_path / "reference.parquet", columns=cp))


def test_train_killed_at_a_random_moment(tmp_path, seed=1):
    shards = noisy_shards(tmp_path / "in", shards=1, images=80)
    scores = tmp_path / "scores.parquet"
    score = ["score", shards / "00000.parquet", "--encoder", "precomputed", "--method", "similarity",
             "-o", scores, "--no-progress"]  # fmt: skip
    _timed(score)
    args = ["train", scores, "--epochs", "30", "--device", "cpu"]
    seconds = _timed([*args, "-o", tmp_path / "reference"])
    target = tmp_path / "model"
    _kill_at_random([*args, "-o", target], seconds, seed)
    if target.exists():
        names = sorted(p.name for p in target.iterdir())
        assert names == sorted(p.name for p in (tmp_path / "reference").iterdir())
    _timed([*args, "-o", target])
    assert not _no_temporaries(tmp_path)
    for head in ("image_head.pt", "text_head.pt"):
        assert (target / head).read_bytes() == (tmp_path / "reference" / head).read_bytes()
    made, reference = (json.loads((p / "model.json").read_text()) for p in (target, tmp_path / "reference"))
    for record in (made, reference):  # the one thing that differs between two runs
        del record["info"]["train_s"]
    assert made == reference
