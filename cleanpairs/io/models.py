"""Retrieval model folders: the trained heads, their sizes and encoder id, and the search indexes
built over corpora with them.

A model folder holds ``model.json`` (what the heads are and how they were trained),
``image_head.pt`` and ``text_head.pt`` (torch state dicts) and, once a corpus has been
searched, ``index/<corpus fingerprint>/`` with the corpus's faiss indexes and item tables.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import pyarrow as pa
import pyarrow.parquet as pq
import torch

import cleanpairs
from cleanpairs.core.heads import ProjectionHead, TorchHeads
from cleanpairs.device import resolve_device
from cleanpairs.errors import CleanpairsError, InputError, first_line
from cleanpairs.io.atomic import atomic_output, check_output_path
from cleanpairs.io.tables import expand_sources

MODEL_FORMAT = "cleanpairs-retrieval-model"
_UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")
MODEL_FILE = "model.json"
HEAD_FILES = {"image": "image_head.pt", "text": "text_head.pt"}
# A damaged head file fails in zip, pickle or torch code, each with its own error.
DAMAGED_HEAD_ERRORS = (
    OSError, RuntimeError, KeyError, ValueError, IndexError, EOFError, pickle.UnpicklingError
)
INDEX_FOLDER = "index"
INDEX_FILE = "index.json"


@dataclass
class SavedModel:
    """A model folder's contents: the heads, the encoder they sit on, and how they were trained."""

    heads: TorchHeads
    encoder: str
    info: dict[str, Any]
    version: str


def _head_sizes(head: ProjectionHead) -> dict[str, int]:
    hidden = head.mlp[0].out_features if head.mlp is not None else 0
    return {"d_in": head.shortcut.in_features, "d_out": head.shortcut.out_features, "hidden": hidden}


def is_model_folder(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds a model written by :func:`save_model`."""
    try:
        return json.loads((Path(folder) / MODEL_FILE).read_text()).get("format") == MODEL_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def check_model_target(folder: str | os.PathLike) -> None:
    """Raise :class:`InputError` unless ``folder`` is free for a model: absent, an empty folder,
    or an earlier model holding only a model's files (it is replaced whole, so anything else in
    it would be lost)."""
    path = check_output_path(folder, directory=True)
    if not path.is_dir() or not any(path.iterdir()):
        return
    if not is_model_folder(path):
        raise InputError(f"{folder} already holds files that are not a cleanpairs model; choose a new folder")
    foreign = sorted({p.name for p in path.iterdir()} - {MODEL_FILE, INDEX_FOLDER, *HEAD_FILES.values()})
    if foreign:
        raise InputError(
            f"{folder} holds a model and other files ({', '.join(foreign[:3])}) that saving a model "
            "there would delete; choose a new folder"
        )


def save_model(folder: str | os.PathLike, heads: TorchHeads, encoder: str, info: dict[str, Any]) -> Path:
    """Write ``heads`` with their sizes, ``encoder`` id and training ``info`` as a model folder.

    The folder appears whole or not at all; an earlier model there (and its indexes) is replaced.

    Raises
    ------
    InputError
        ``folder`` holds something that is not a model, or the heads are not projection heads.
    """
    check_model_target(folder)
    parts = {"image": heads.image_head, "text": heads.text_head}
    if not all(isinstance(head, ProjectionHead) for head in parts.values()):
        raise InputError("only projection heads (cleanpairs.core.heads.ProjectionHead) can be saved")
    description = {
        "format": MODEL_FORMAT,
        "version": cleanpairs.__version__,
        "encoder": encoder,
        "heads": {name: _head_sizes(head) for name, head in parts.items()},
        "info": info,
    }
    with atomic_output(folder, directory=True) as tmp:
        for name, head in parts.items():
            torch.save({k: v.detach().cpu() for k, v in head.state_dict().items()}, tmp / HEAD_FILES[name])
        (tmp / MODEL_FILE).write_text(json.dumps(description, indent=2, sort_keys=True))
    return Path(folder)


def _read_description(folder: Path) -> dict[str, Any]:
    """``model.json`` of a model folder, checked for what :func:`load_model` reads from it."""
    file = folder / MODEL_FILE
    if not file.is_file():
        raise InputError(
            f"{folder} is not a cleanpairs model folder (make one with `cleanpairs train`): "
            f"it has no {MODEL_FILE}"
        )
    try:
        description = json.loads(file.read_text())
    except (ValueError, OSError) as err:  # JSONDecodeError, undecodable bytes, unreadable file
        raise InputError(
            f"{file} cannot be read as JSON ({first_line(err)}); the model folder is damaged"
        ) from None
    if not isinstance(description, dict) or description.get("format") != MODEL_FORMAT:
        raise InputError(f"{folder} is not a cleanpairs model folder (make one with `cleanpairs train`)")
    missing = [name for name in ("encoder", "heads") if name not in description]
    heads = description.get("heads")
    if isinstance(heads, dict):
        missing += [f"heads.{part}" for part in HEAD_FILES if part not in heads]
    if missing:
        raise InputError(f"{file} lacks fields {', '.join(missing)}; the model folder is damaged")
    if not isinstance(heads, dict):
        raise InputError(f"{file} holds no head sizes under 'heads'; the model folder is damaged")
    for part in HEAD_FILES:
        _check_sizes(file, part, heads[part])
    return description


def _check_sizes(file: Path, part: str, sizes: object) -> None:
    ok = isinstance(sizes, dict) and all(
        isinstance(sizes.get(k), int) and not isinstance(sizes.get(k), bool) and sizes[k] >= low
        for k, low in (("d_in", 1), ("d_out", 1), ("hidden", 0))
    )
    if not ok:
        raise InputError(
            f"{file} gives the {part} head's sizes as {json.dumps(sizes)[:60]}; expected d_in, d_out "
            "(positive integers) and hidden (0 or more); the model folder is damaged"
        )


def _refusal(file: Path, err: pickle.UnpicklingError) -> str:
    """One line for a file torch's weights-only unpickler refused: an object that is not a
    tensor (named in torch's long message), or bytes that are no pickle at all."""
    found = _UNSAFE_GLOBAL.search(str(err))
    if found:
        return (
            f"{file} is refused by a weights-only load: it holds {found.group(1)}, not only tensors "
            "(cleanpairs loads heads saved by `cleanpairs train`, and never runs pickled code)"
        )
    return f"{file} cannot be read as torch tensors (not a file torch.save wrote)"


def _load_head(folder: Path, part: str, sizes: dict[str, int]) -> ProjectionHead:
    """The ``part`` head of a model folder, its state checked against the sizes ``model.json`` gives."""
    file = folder / HEAD_FILES[part]
    if not file.is_file():
        raise InputError(f"the model in {folder} lacks its {part} head: {file} is missing")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise InputError(_refusal(file, err)) from None
    except (OSError, RuntimeError, EOFError, ValueError, KeyError, IndexError, UnicodeDecodeError) as err:
        # A damaged file fails in zip, pickle or torch code, each with an error of its own.
        raise InputError(f"{file} cannot be read as torch tensors ({first_line(err)})") from None
    head = ProjectionHead(sizes["d_in"], sizes["d_out"], sizes["hidden"])
    wanted = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{file} does not hold a state dict of tensors; the model folder is damaged")
    found = {k: tuple(v.shape) for k, v in state.items()}
    if found != wanted:
        raise InputError(
            f"{file} does not hold the {part} head {MODEL_FILE} describes "
            f"(d_in {sizes['d_in']}, d_out {sizes['d_out']}, hidden {sizes['hidden']}): "
            f"{_shape_difference(wanted, found)}"
        )
    head.load_state_dict(state)
    return head


def _shape_difference(wanted: dict[str, tuple], found: dict[str, tuple]) -> str:
    for key, shape in wanted.items():
        if key not in found:
            return f"it lacks {key}"
        if found[key] != shape:
            return f"its {key} is {list(found[key])}, not {list(shape)}"
    return f"it has {', '.join(sorted(set(found) - set(wanted)))} too"


def load_model(folder: str | os.PathLike, *, device: str = "auto") -> SavedModel:
    """Read a model folder written by :func:`save_model`, its heads on ``device``.

    Raises
    ------
    InputError
        The folder is missing or is not a cleanpairs model; ``model.json`` is damaged or lacks
        fields; a head file is missing, refused by a weights-only load, or holds heads of other
        sizes than ``model.json`` says.
    """
    path = Path(folder)
    if not path.is_dir():
        raise InputError(f"no such model folder: {folder}")
    description = _read_description(path)
    sizes = description["heads"]
    if sizes["image"]["d_out"] != sizes["text"]["d_out"]:
        raise InputError(
            f"{path / MODEL_FILE} gives the heads different output sizes ({sizes['image']['d_out']} "
            f"and {sizes['text']['d_out']}); they must share one space"
        )
    target = resolve_device(device)
    heads = {part: _load_head(path, part, sizes[part]).to(target).eval() for part in HEAD_FILES}
    return SavedModel(
        TorchHeads(heads["image"], heads["text"], target),
        str(description["encoder"]),
        description.get("info", {}),
        description.get("version", "unknown"),
    )


def corpus_files_fingerprint(source: str | os.PathLike, *parts: object) -> str:
    """A short hash of the table files ``source`` names (path, size, modification time) and of
    ``parts`` (column choices): it changes when the corpus's tables do, without reading them.

    Raises
    ------
    InputError
        ``source`` names no table files.
    """
    digest = hashlib.sha1(usedforsecurity=False)
    for path in expand_sources(source):
        stat = path.stat()
        digest.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    digest.update(json.dumps([str(p) for p in parts]).encode())
    return digest.hexdigest()[:20]


@dataclass
class SearchIndex:
    """Nearest-neighbour indexes over a corpus's distinct images and its captions, in the
    model's space, with what each row of them is (``key``, ``image``, ``caption`` columns)."""

    images: faiss.Index
    texts: faiss.Index
    image_items: pa.Table
    text_items: pa.Table
    info: dict[str, Any]


def _index_folder(model_folder: str | os.PathLike, fingerprint: str) -> Path:
    return Path(model_folder) / INDEX_FOLDER / fingerprint


def load_index(model_folder: str | os.PathLike, fingerprint: str) -> SearchIndex | None:
    """The index saved for the corpus with this fingerprint, or ``None`` when there is none or
    it is damaged (it is only a cache of what a search can build again)."""
    folder = _index_folder(model_folder, fingerprint)
    if not (folder / INDEX_FILE).is_file():
        return None
    try:
        return SearchIndex(
            faiss.read_index(str(folder / "images.faiss")),
            faiss.read_index(str(folder / "texts.faiss")),
            pq.read_table(folder / "images.parquet"),
            pq.read_table(folder / "texts.parquet"),
            json.loads((folder / INDEX_FILE).read_text()),
        )
    except (RuntimeError, OSError, ValueError, pa.ArrowException):  # faiss raises RuntimeError
        return None


class IndexNotSaved(CleanpairsError):
    """A search index could not be written under its model folder (read-only, full, no rights)."""


def save_index(model_folder: str | os.PathLike, fingerprint: str, index: SearchIndex) -> Path:
    """Write ``index`` under the model folder, keyed by ``fingerprint``; it appears whole or not at all.

    Raises
    ------
    IndexNotSaved
        The model folder cannot be written; nothing is left behind.
    """
    folder = _index_folder(model_folder, fingerprint)
    try:
        with atomic_output(folder, directory=True) as tmp:
            faiss.write_index(index.images, str(tmp / "images.faiss"))
            faiss.write_index(index.texts, str(tmp / "texts.faiss"))
            pq.write_table(index.image_items, tmp / "images.parquet")
            pq.write_table(index.text_items, tmp / "texts.parquet")
            (tmp / INDEX_FILE).write_text(json.dumps(index.info, indent=2, sort_keys=True))
    except InputError as err:  # the output check found the folder unwritable before any write
        raise IndexNotSaved(str(err)) from None
    except (OSError, RuntimeError) as err:  # faiss reports a failed write as RuntimeError
        reason = getattr(err, "strerror", None) or first_line(err)
        raise IndexNotSaved(
            f"cannot save the index under {Path(model_folder) / INDEX_FOLDER}: {reason}"
        ) from None
    return folder
