"""Atomic writes: an output appears whole under its final name, or not at all."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from cleanpairs.errors import InputError


@contextlib.contextmanager
def atomic_output(target: str | os.PathLike, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; move it to ``target`` when the block succeeds.

    A run killed or failing inside the block leaves ``target`` as it was (absent, or the
    previous version) and removes the temporary file. With ``directory=True`` the temporary
    path is a fresh folder, and an existing ``target`` folder is replaced as a whole.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    if directory:
        tmp.mkdir()
    try:
        yield tmp
        if directory and target.exists():
            old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old)
        else:
            os.replace(tmp, target)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def refuse_overwrite(output: str | os.PathLike, inputs: Iterable[str | os.PathLike]) -> None:
    """Raise :class:`InputError` if ``output`` is one of ``inputs`` or a folder holding one."""
    out = Path(output).resolve()
    for source in inputs:
        src = Path(source).resolve()
        if out == src or out in src.parents:
            raise InputError(f"output {output} would overwrite the input {source}; choose another path")
