"""Fitted scorer folders: a method's fitted state as plain data, never a pickle.

A scorer folder holds ``scorer.json`` (the manifest: format and package version, method, its
parameters and seed, the fit corpus's sizes, the fitted mixtures' settings) and
``tensors.pt``, a torch state dict of named tensors (the networks' weights, the mixtures'
arrays) that is read back with ``torch.load(..., weights_only=True)``. This module knows the
files, not the methods: ``cleanpairs.methods.load_scorer`` turns a folder into a scorer.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

import cleanpairs
from cleanpairs.errors import InputError, first_line
from cleanpairs.io.atomic import atomic_output

SCORER_FORMAT = "cleanpairs-scorer"
SCORER_FORMAT_VERSION = 2
"""The folder layout's version. Version 2 added splits carried onto held-out pairs (a split's
``carried`` setting and ``carry`` array), which a version-1 reader would silently ignore."""
READABLE_VERSIONS = (1, 2)
"""The versions this reader reads (a version-1 scorer has no carried split); it refuses others."""

MANIFEST_FILE = "scorer.json"
TENSORS_FILE = "tensors.pt"
REQUIRED_FIELDS = ("method", "params", "seed", "sizes")
"""What every manifest names besides its format, whatever the method."""


def save_scorer(folder: str | os.PathLike, manifest: dict[str, Any], tensors: dict[str, Any]) -> Path:
    """Write a fitted scorer's ``manifest`` and ``tensors`` (torch tensors or numpy arrays) as a folder.

    The manifest is written with the format, its version and the package version added. The
    folder appears whole or not at all; an earlier scorer folder there is replaced.

    Raises
    ------
    InputError
        ``folder`` is a file, or a folder holding files that are not a scorer; or the manifest
        lacks a required field or cannot be written as JSON.
    """
    path = Path(folder)
    if path.is_file():
        raise InputError(f"{folder} is a file; a scorer is saved as a folder")
    if path.is_dir() and any(path.iterdir()) and not (path / MANIFEST_FILE).is_file():
        raise InputError(f"{folder} holds files that are not a cleanpairs scorer; choose a new folder")
    missing = [name for name in REQUIRED_FIELDS if name not in manifest]
    if missing:
        needed = ", ".join(REQUIRED_FIELDS)
        raise InputError(f"a scorer manifest needs the fields {needed}; it lacks {missing[0]!r}")
    document = {
        **manifest,
        "format": SCORER_FORMAT,
        "format_version": SCORER_FORMAT_VERSION,
        "version": cleanpairs.__version__,
    }
    try:
        text = json.dumps(document, indent=2, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise InputError(f"the scorer manifest cannot be written as JSON: {err}") from None
    state = {name: _tensor(value) for name, value in tensors.items()}
    with atomic_output(path, directory=True) as tmp:
        torch.save(state, tmp / TENSORS_FILE)
        (tmp / MANIFEST_FILE).write_text(text + "\n")
    return path


def load_scorer_files(folder: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read a folder written by :func:`save_scorer`: its manifest and its named CPU tensors.

    Raises
    ------
    InputError
        One line saying what is wrong: no such folder, no manifest, a manifest that is not JSON,
        of another format or an unknown format version, or lacking a field; tensors missing,
        unreadable, or refused by ``weights_only`` loading (anything but plain tensors).
    """
    path = Path(folder)
    if not path.is_dir():
        raise InputError(f"no such scorer folder: {folder}")
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        raise InputError(f"{folder} is not a cleanpairs scorer folder: it has no {MANIFEST_FILE}")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InputError(f"{manifest_path} is not valid JSON: {err}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != SCORER_FORMAT:
        raise InputError(f"{manifest_path} is not a cleanpairs scorer manifest (no format {SCORER_FORMAT!r})")
    version = manifest.get("format_version")
    if version not in READABLE_VERSIONS:
        raise InputError(
            f"{folder} holds a scorer of format version {version!r}; this cleanpairs "
            f"({cleanpairs.__version__}) reads versions {', '.join(map(str, READABLE_VERSIONS))}"
        )
    missing = [name for name in REQUIRED_FIELDS if name not in manifest]
    if missing:
        raise InputError(f"{manifest_path} lacks the field {missing[0]!r}")
    tensors_path = path / TENSORS_FILE
    if not tensors_path.is_file():
        raise InputError(f"{folder} is not a complete scorer folder: it has no {TENSORS_FILE}")
    try:
        tensors = torch.load(tensors_path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise InputError(f"{tensors_path} was refused by weights-only loading: {_refusal(err)}") from None
    except (OSError, RuntimeError, EOFError, ValueError) as err:
        reason = first_line(err)
        raise InputError(f"{tensors_path} cannot be read: {reason}") from None
    if not isinstance(tensors, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in tensors.items()
    ):
        raise InputError(f"{tensors_path} does not hold named tensors")
    return manifest, tensors


def _refusal(err: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in a few words (its message runs to
    several paragraphs)."""
    message = str(err)
    found = re.search(r"Unsupported global: GLOBAL (\S+)", message)
    if found:
        return f"it holds {found.group(1)}, not only tensors"
    if "Unsupported operand" in message or "invalid load key" in message:
        return "it is not a torch tensor file"
    return "it holds more than tensors"


def _tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().contiguous()
    return torch.from_numpy(np.ascontiguousarray(value))
