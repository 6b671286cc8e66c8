"""Atomic writes: an output appears whole under its final name, or not at all.

Every writer goes through :func:`atomic_output`. It checks the output path before any work
starts (:func:`check_output_path`), writes beside the target under a name that says whose it
is (``.NAME.cleanpairs-tmp-<host>-<pid>-<rand>``), and moves it into place at the end. A run
killed with ``kill -9`` cannot clean up after itself, so the next write to the same target
removes the temporaries of processes that are gone (:func:`remove_stale_temporaries`); those of
a live process, or of another machine sharing the folder, are left alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from cleanpairs.errors import InputError

TMP_TAG = "cleanpairs-tmp"
OLD_TAG = "cleanpairs-old"
_HOST = re.sub(r"[^A-Za-z0-9_]+", "_", socket.gethostname())[:40] or "host"


def _sibling(target: Path, tag: str) -> Path:
    return target.with_name(f".{target.name}.{tag}-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


_TEMPORARY = re.compile(rf"\.(.+)\.({TMP_TAG}|{OLD_TAG})-(\w+)-(\d+)-[0-9a-f]{{8}}")


def _owner(name: str) -> tuple[str, str, str, int] | None:
    """``(target name, tag, host, pid)`` of one of our temporaries, or ``None`` if ``name`` is not one."""
    found = _TEMPORARY.fullmatch(name)
    if found is None:
        return None
    return found.group(1), found.group(2), found.group(3), int(found.group(4))


def _alive(pid: int) -> bool:
    # On Windows os.kill(pid, 0) would end the process, so there every owner counts as alive.
    if pid == os.getpid() or os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale_temporaries(target: str | os.PathLike, *, every_target: bool = False) -> list[Path]:
    """Remove the temporaries of ``target`` left by runs of this machine that are no longer alive.

    A run killed between moving the previous version of a folder aside and moving the new one
    into place leaves the target absent and the previous version aside: that version is put
    back, so the target is again what it was before the killed run.

    Parameters
    ----------
    target
        The output whose temporaries to look for.
    every_target
        Treat ``target`` as a folder and clean up after every output in it (a cache folder,
        whose writers each make a new file, does this once rather than on every write).

    Returns
    -------
    list of Path
        The temporaries removed or put back.
    """
    target = Path(target)
    folder = target if every_target else target.parent
    if not folder.is_dir():
        return []
    found = []
    for entry in sorted(folder.iterdir()):
        owner = _owner(entry.name)
        if owner is None or (not every_target and owner[0] != target.name):
            continue
        name, tag, host, pid = owner
        if host != _HOST or _alive(pid):
            continue
        # Best effort: another process may be cleaning up the same entry right now.
        with contextlib.suppress(OSError):
            if tag == OLD_TAG and not os.path.lexists(folder / name):
                entry.rename(folder / name)
            else:
                _remove(entry)
            found.append(entry)
    return found


def _first_existing(path: Path) -> Path:
    path = path.absolute()
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def check_output_path(target: str | os.PathLike, *, directory: bool = False) -> Path:
    """Raise :class:`InputError` unless ``target`` can be written as a file (or, with
    ``directory``, a folder): it is not a folder (a file), the nearest existing folder above it
    is a folder, and it is writable. Call it before long work, so a run does not fail at its end.

    Returns
    -------
    Path
        ``target`` as a path.
    """
    path = Path(target)
    if path.is_dir() and not directory:
        raise InputError(f"cannot write {target}: it is a folder, and this output is a file")
    if path.exists() and not path.is_dir() and directory:
        raise InputError(f"cannot write {target}: it is a file, and this output is a folder")
    above = _first_existing(path.parent)
    if not above.is_dir():
        raise InputError(f"cannot write {target}: {above} is a file, not a folder")
    if not os.access(above, os.W_OK | os.X_OK):
        if hasattr(os, "statvfs") and os.statvfs(above).f_flag & os.ST_RDONLY:
            raise InputError(f"cannot write {target}: {above} is on a read-only file system")
        raise InputError(f"cannot write {target}: no permission to write in {above}")
    return path


@contextlib.contextmanager
def _output_errors(target: Path) -> Iterator[None]:
    """Turn a failure to create or move the output itself into one line naming the path."""
    try:
        yield
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise InputError(f"cannot write {target}: {reason}") from None


def _move_into_place(tmp: Path, target: Path, directory: bool) -> None:
    if directory and target.exists():
        old = _sibling(target, OLD_TAG)
        target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old)
    else:
        os.replace(tmp, target)


@contextlib.contextmanager
def atomic_output(
    target: str | os.PathLike, *, directory: bool = False, sweep: bool = True
) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; move it to ``target`` when the block succeeds.

    A run killed or failing inside the block leaves ``target`` as it was (absent, or the
    previous version) and removes the temporary (after ``kill -9``, the next write to
    ``target`` does). With ``directory=True`` the temporary path is a fresh folder, and an
    existing ``target`` folder is replaced as a whole: callers check first that it holds only
    what they wrote before. Otherwise the temporary is an empty file the block overwrites.
    ``sweep=False`` skips looking for stale temporaries, for writers of many small files in one
    folder that sweep it once themselves (listing a big folder on every write is quadratic).

    Raises
    ------
    InputError
        ``target`` cannot be written (see :func:`check_output_path`); nothing is written.
    """
    target = check_output_path(target, directory=directory)
    if sweep:
        remove_stale_temporaries(target)
    tmp = _sibling(target, TMP_TAG)
    with _output_errors(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        if directory:
            tmp.mkdir()
        else:
            tmp.touch(exist_ok=False)
    try:
        yield tmp
        with _output_errors(target):
            _move_into_place(tmp, target, directory)
    except BaseException:
        _remove(tmp)
        raise


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def refuse_overwrite(output: str | os.PathLike, inputs: Iterable[str | os.PathLike]) -> None:
    """Raise :class:`InputError` if ``output`` is one of ``inputs`` (by path, symlink or hard
    link) or a folder holding one."""
    out = Path(output).resolve()
    for source in inputs:
        src = Path(source).resolve()
        if out == src or out in src.parents or _same_file(out, src):
            raise InputError(f"output {output} would overwrite the input {source}; choose another path")


OWNED_MANIFEST = "_cleanpairs.json"
"""The manifest a cleanpairs folder output (an export, a review) writes, listing its files."""


def files_written_before(folder: Path, fmt: str) -> set[str] | None:
    """The files an earlier output of format ``fmt`` wrote in ``folder`` (its manifest's
    ``files`` plus the manifest), or ``None`` where no readable manifest of that format is there."""
    try:
        manifest = json.loads((folder / OWNED_MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, list) or manifest.get("format") != fmt:
        return None
    return {str(name) for name in files} | {OWNED_MANIFEST}


def check_replaceable_folder(out_dir: str | os.PathLike, fmt: str, what: str) -> None:
    """Raise :class:`InputError` unless ``out_dir`` may be replaced by an output of format
    ``fmt``: absent, empty, or an earlier such output holding only the files its manifest names.
    An output never deletes what it did not write.

    Raises
    ------
    InputError
        ``out_dir`` is a file, cannot be written, or holds anything an earlier ``what`` (an
        export, a review) did not write.
    """
    folder = check_output_path(out_dir, directory=True)
    if not folder.is_dir():
        return
    present = {entry.name for entry in folder.iterdir()}
    foreign = sorted(present - (files_written_before(folder, fmt) or set()))
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise InputError(
            f"{out_dir} already holds files that no cleanpairs {what} wrote ({shown}); "
            f"write the {what} into a new or empty folder"
        )
