"""Atomic outputs: checked before work, whole or absent, and cleaned up after a ``kill -9``."""

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from cleanpairs.errors import InputError
from cleanpairs.io.atomic import _HOST as HOST
from cleanpairs.io.atomic import (
    OLD_TAG,
    TMP_TAG,
    atomic_output,
    check_output_path,
    remove_stale_temporaries,
)

KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from cleanpairs.io.atomic import atomic_output
with atomic_output(sys.argv[1], directory=True) as tmp:
    (tmp / "half-written").write_text("x")
    os.kill(os.getpid(), signal.SIGKILL)
"""

SLOW_WRITER = """
import sys, time
from cleanpairs.io.atomic import atomic_output
with atomic_output(sys.argv[1]) as tmp:
    tmp.write_text("mine")
    print(tmp, flush=True)
    time.sleep(60)
"""


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if "cleanpairs-" in p.name)


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    return int(done.stdout)


def test_a_killed_writer_leaves_a_marked_temporary_that_the_next_write_removes(tmp_path):
    target = tmp_path / "out"
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(target)], cwd=Path(__file__).parents[2])
    assert killed.returncode == -9
    assert not target.exists()
    [left] = temporaries(tmp_path)
    assert left.startswith(f".out.{TMP_TAG}-{HOST}-")
    with atomic_output(target, directory=True) as tmp:
        (tmp / "whole").write_text("y")
    assert temporaries(tmp_path) == []
    assert [p.name for p in target.iterdir()] == ["whole"]


def test_a_live_writers_temporary_is_left_alone(tmp_path):
    target = tmp_path / "out.txt"
    writer = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITER, str(target)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    try:
        theirs = Path(writer.stdout.readline().strip())
        with atomic_output(target) as tmp:
            tmp.write_text("ours")
        assert theirs.read_text() == "mine"
        assert target.read_text() == "ours"
    finally:
        writer.kill()
        writer.wait()
    remove_stale_temporaries(target)
    assert temporaries(tmp_path) == []


def test_a_run_killed_between_its_two_renames_gets_the_previous_version_back(tmp_path):
    target = tmp_path / "model"
    pid = dead_pid()
    aside = tmp_path / f".model.{OLD_TAG}-{HOST}-{pid}-{uuid.uuid4().hex[:8]}"
    aside.mkdir()
    (aside / "model.json").write_text("previous")
    new = tmp_path / f".model.{TMP_TAG}-{HOST}-{pid}-{uuid.uuid4().hex[:8]}"
    new.mkdir()
    (new / "model.json").write_text("never finished")
    assert len(remove_stale_temporaries(target)) == 2
    assert (target / "model.json").read_text() == "previous"
    assert temporaries(tmp_path) == []


def test_temporaries_of_other_targets_and_machines_are_not_touched(tmp_path):
    pid = dead_pid()
    other_target = tmp_path / f".other.{TMP_TAG}-{HOST}-{pid}-0123abcd"
    other_host = tmp_path / f".out.{TMP_TAG}-elsewhere-{pid}-0123abcd"
    not_ours = tmp_path / ".out.tmp-0123abcd"
    for path in (other_target, other_host, not_ours):
        path.write_text("x")
    with atomic_output(tmp_path / "out") as tmp:
        tmp.write_text("y")
    assert all(p.exists() for p in (other_target, other_host, not_ours))
    assert remove_stale_temporaries(tmp_path, every_target=True) == [other_target]


def test_an_output_under_a_file_is_one_error_and_nothing_is_written(tmp_path):
    (tmp_path / "file").write_text("keep")
    for target in (tmp_path / "file" / "out.parquet", tmp_path / "file" / "deeper" / "out.parquet"):
        with pytest.raises(InputError, match=r"cannot write .*: .*file is a file, not a folder"):
            check_output_path(target)
        with pytest.raises(InputError, match="is a file, not a folder"), atomic_output(target) as tmp:
            tmp.write_text("never")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
    assert (tmp_path / "file").read_text() == "keep"


def test_a_file_output_at_a_folder_and_a_folder_output_at_a_file_are_refused(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("keep")
    with pytest.raises(InputError, match="it is a folder, and this output is a file"):
        check_output_path(tmp_path / "folder")
    with pytest.raises(InputError, match="it is a file, and this output is a folder"):
        check_output_path(tmp_path / "file", directory=True)
    check_output_path(tmp_path / "folder", directory=True)
    check_output_path(tmp_path / "file")


def test_a_read_only_folder_is_one_error_before_any_work(read_only_folder):
    with pytest.raises(InputError, match="read-only file system|no permission to write"):
        check_output_path(read_only_folder / "out.parquet")
    with pytest.raises(InputError, match="read-only file system|no permission to write"):
        check_output_path(read_only_folder / "new" / "deeper", directory=True)
    assert list(read_only_folder.iterdir()) == []
