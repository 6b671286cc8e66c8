"""The executors: the same step over the same real shards gives the same results and files
whether it runs in this process or as Ray tasks, in task order, and a step's error arrives as
the one line it raised."""

from __future__ import annotations

import functools
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cleanpairs.engines import run_tasks
from cleanpairs.errors import InputError, ParameterError
from cleanpairs.io.atomic import atomic_output

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Shard:
    """One task: a parquet shard to read and the file to write its summary to."""

    path: str
    out: str
    delay: float = 0.0


def summarise(shard: Shard, *, factor: int = 1) -> dict:
    """Read a shard, write its row count and column sum atomically, return them."""
    time.sleep(shard.delay)
    if not Path(shard.path).exists():
        raise InputError(f"shard {shard.path} does not exist")
    table = pq.read_table(shard.path)
    summary = {"shard": Path(shard.path).name, "rows": table.num_rows,
               "sum": factor * sum(table.column("value").to_pylist())}
    with atomic_output(shard.out) as tmp:
        tmp.write_text(json.dumps(summary, sort_keys=True))
    return summary


def finish_time(shard: Shard) -> tuple[str, float]:
    """Sleep the shard's delay; say when it finished."""
    time.sleep(shard.delay)
    return Path(shard.path).name, time.time()


def broken(shard: Shard) -> None:
    raise ValueError(f"not a CleanpairsError: {shard.path}")


def make_shards(folder: Path, out: Path, n: int = 4) -> list[Shard]:
    folder.mkdir(parents=True, exist_ok=True)
    shards = []
    for i in range(n):
        path = folder / f"{i:05d}.parquet"
        pq.write_table(pa.table({"key": list(range(i * 100, i * 100 + 10 + i)),
                                 "value": [float(i * j) for j in range(10 + i)]}), path)
        shards.append(Shard(str(path), str(out / f"{i:05d}.json")))
    return shards


def written(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# Tests that need no Ray running.

def test_an_unknown_engine_is_named_in_one_line(tmp_path):
    with pytest.raises(ParameterError) as err:
        run_tasks(summarise, make_shards(tmp_path / "in", tmp_path / "out"), engine="spark")
    assert str(err.value) == "unknown engine 'spark'; choose local or ray"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("setting", [{"ray_address": "auto"}, {"num_cpus": 2}])
def test_ray_settings_are_refused_by_the_local_engine(setting):
    with pytest.raises(ParameterError, match=f"{next(iter(setting))} applies to the ray engine only"):
        run_tasks(summarise, [], engine="local", **setting)


@pytest.mark.parametrize("num_cpus", [0, -1, 1.5, True])
def test_num_cpus_must_be_a_positive_whole_number(num_cpus):
    with pytest.raises(ParameterError, match="num_cpus must be a whole number of at least 1"):
        run_tasks(summarise, [], engine="ray", num_cpus=num_cpus)


def test_the_local_engine_runs_in_order_and_writes_every_file(tmp_path):
    shards = make_shards(tmp_path / "in", tmp_path / "out")
    results = run_tasks(summarise, shards)
    assert [r["shard"] for r in results] == ["00000.parquet", "00001.parquet", "00002.parquet",
                                             "00003.parquet"]
    assert [r["rows"] for r in results] == [10, 11, 12, 13]
    assert results[2]["sum"] == 2 * sum(range(12))
    assert json.loads((tmp_path / "out" / "00003.json").read_text()) == results[3]


def test_a_progress_bar_stays_quiet_off_a_terminal(tmp_path, capfd):
    run_tasks(summarise, make_shards(tmp_path / "in", tmp_path / "out"), progress=True, description="x")
    assert capfd.readouterr() == ("", "")


def test_importing_the_engines_does_not_import_ray():
    code = "import sys, cleanpairs.engines; assert 'ray' not in sys.modules, 'ray imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_without_ray_the_ray_engine_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where Ray is absent
    with pytest.raises(ParameterError) as err:
        run_tasks(summarise, make_shards(tmp_path / "in", tmp_path / "out"), engine="ray")
    assert str(err.value) == "the ray engine needs Ray: pip install 'cleanpairs[ray]'"


def test_an_address_nobody_answers_at_is_refused_in_one_line(tmp_path):
    with socket.socket() as sock:  # a port just freed: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ParameterError) as err:
        run_tasks(summarise, [Shard("a.parquet", "")], engine="ray", ray_address=f"127.0.0.1:{port}")
    assert str(err.value) == (f"the ray engine cannot connect to Ray at 127.0.0.1:{port}: "
                              "nothing answers there (Connection refused)")


# The ray engine starting (and stopping) a local Ray of its own: before the shared one below.

def test_the_ray_engine_starts_a_quiet_local_ray_and_shuts_it_down(tmp_path, monkeypatch, capfd):
    ray = pytest.importorskip("ray")
    assert not ray.is_initialized()
    monkeypatch.chdir(ROOT)  # Ray workers import the step's module from the driver's folder
    shards = make_shards(tmp_path / "in", tmp_path / "out")
    results = run_tasks(summarise, shards, engine="ray", num_cpus=2)
    assert not ray.is_initialized()
    assert results == run_tasks(summarise, make_shards(tmp_path / "in", tmp_path / "local"))
    out, err = capfd.readouterr()
    assert out == "" and err == ""


# Tests sharing one local Ray with 2 CPUs, started once for the module.

@pytest.fixture(scope="module")
def shared_ray():
    ray = pytest.importorskip("ray")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(ROOT)
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR)
    yield ray
    ray.shutdown()


def test_ray_gives_the_same_results_and_files_as_local(tmp_path, shared_ray):
    shards = make_shards(tmp_path / "in", tmp_path / "local")
    local = run_tasks(summarise, shards, engine="local")
    on_ray = run_tasks(summarise, [Shard(s.path, str(tmp_path / "ray" / Path(s.out).name)) for s in shards],
                       engine="ray")
    assert on_ray == local
    assert written(tmp_path / "ray") == written(tmp_path / "local")
    assert shared_ray.is_initialized()  # a Ray the caller started is left running


def test_ray_returns_results_in_task_order_when_tasks_finish_out_of_order(tmp_path, shared_ray):
    shards = [Shard(f"{i}.parquet", "", delay=0.1 * (3 - i)) for i in range(4)]
    results = run_tasks(finish_time, shards, engine="ray")
    assert [name for name, _ in results] == ["0.parquet", "1.parquet", "2.parquet", "3.parquet"]
    finished = [when for _, when in results]
    assert finished[1] < finished[0]  # two at a time: the second task finished first


def test_a_step_given_as_a_partial_runs_on_ray_one_task_at_a_time(tmp_path, shared_ray):
    shards = make_shards(tmp_path / "in", tmp_path / "out")
    results = run_tasks(functools.partial(summarise, factor=2), shards, engine="ray", num_cpus=1)
    assert [r["sum"] for r in results] == [2 * i * sum(range(10 + i)) for i in range(4)]


def test_a_cleanpairs_error_on_a_ray_worker_arrives_as_the_same_one_line_error(tmp_path, shared_ray):
    shards = make_shards(tmp_path / "in", tmp_path / "out")
    missing = Shard(str(tmp_path / "in" / "gone.parquet"), str(tmp_path / "out" / "gone.json"))
    with pytest.raises(InputError) as err:
        run_tasks(summarise, [*shards[:2], missing, *shards[2:]], engine="ray")
    assert type(err.value) is InputError
    assert str(err.value) == f"shard {missing.path} does not exist"
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_the_ray_engine_connects_to_a_running_cluster_and_leaves_it_running(tmp_path, shared_ray):
    # Another driver process, as a user's run would be: this one already holds the cluster.
    shards = make_shards(tmp_path / "in", tmp_path / "cluster")
    address = shared_ray.get_runtime_context().gcs_address
    code = ("import json, sys; from cleanpairs.engines import run_tasks; "
            "from tests.engines.test_engines import Shard, summarise; "
            "shards = [Shard(**s) for s in json.loads(sys.argv[2])]; "
            "print(json.dumps(run_tasks(summarise, shards, engine='ray', ray_address=sys.argv[1])))")
    # The environment carries the cluster's authentication mode, which Ray set when it started.
    done = subprocess.run([sys.executable, "-c", code, address, json.dumps([vars(s) for s in shards])],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    local = run_tasks(summarise, [Shard(s.path, str(tmp_path / "local" / Path(s.out).name)) for s in shards])
    assert json.loads(done.stdout) == local
    assert written(tmp_path / "cluster") == written(tmp_path / "local")
    assert run_tasks(finish_time, [Shard("a.parquet", "")], engine="ray")[0][0] == "a.parquet"


def test_an_address_is_refused_where_this_process_already_runs_ray(shared_ray):
    with pytest.raises(ParameterError) as err:
        run_tasks(finish_time, [Shard("a.parquet", "")], engine="ray", ray_address="auto")
    assert str(err.value) == ("ray_address cannot be used: this process has already initialised Ray; "
                              "leave ray_address unset to run there, or call ray.shutdown() first")


def test_a_failing_task_stops_the_others_before_the_error_returns(tmp_path, shared_ray):
    shards = [Shard(s.path, s.out, delay=1.0) for s in make_shards(tmp_path / "in", tmp_path / "out")]
    missing = Shard(str(tmp_path / "in" / "gone.parquet"), str(tmp_path / "out" / "gone.json"))
    with pytest.raises(InputError):
        run_tasks(summarise, [missing, *shards], engine="ray")
    # Ray may have handed a task to a worker just as the cancel came; such a task finishes its
    # shard whole. What must not happen is a task still running once the error has returned.
    at_error = sorted((tmp_path / "out").glob("*.json")) if (tmp_path / "out").exists() else []
    time.sleep(1.5)  # long enough for a task left running to write its file
    later = sorted((tmp_path / "out").glob("*.json")) if (tmp_path / "out").exists() else []
    assert later == at_error
    assert len(later) < len(shards)
    for path in later:
        assert json.loads(path.read_text())["rows"] > 0


def test_other_errors_on_a_ray_worker_propagate(tmp_path, shared_ray):
    with pytest.raises(ValueError, match="not a CleanpairsError: a.parquet"):
        run_tasks(broken, [Shard("a.parquet", "")], engine="ray")


def test_a_step_ray_cannot_pickle_is_refused_in_one_line(shared_ray):
    step = functools.partial(finish_time, lock=threading.Lock())
    with pytest.raises(ParameterError) as err:
        run_tasks(step, [Shard("a.parquet", "")], engine="ray")
    assert str(err.value) == ("the ray engine cannot send the step finish_time to its workers: "
                              "cannot pickle '_thread.lock' object")
