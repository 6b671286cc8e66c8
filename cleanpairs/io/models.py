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
from cleanpairs.errors import InputError, first_line
from cleanpairs.io.atomic import atomic_output
from cleanpairs.io.tables import expand_sources

MODEL_FORMAT = "cleanpairs-retrieval-model"
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
    or an earlier model (which is replaced whole)."""
    path = Path(folder)
    if path.is_file():
        raise InputError(f"{folder} is a file; a model is saved as a folder")
    if path.is_dir() and any(path.iterdir()) and not is_model_folder(path):
        raise InputError(f"{folder} already holds files that are not a cleanpairs model; choose a new folder")


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


def load_model(folder: str | os.PathLike, *, device: str = "auto") -> SavedModel:
    """Read a model folder written by :func:`save_model`, its heads on ``device``.

    Raises
    ------
    InputError
        The folder is missing or is not a cleanpairs model.
    """
    path = Path(folder)
    if not path.is_dir():
        raise InputError(f"no such model folder: {folder}")
    if not is_model_folder(path):
        raise InputError(f"{folder} is not a cleanpairs model folder (make one with `cleanpairs train`)")
    description = json.loads((path / MODEL_FILE).read_text())
    target = resolve_device(device)
    heads = {}
    for name, sizes in description["heads"].items():
        head = ProjectionHead(sizes["d_in"], sizes["d_out"], sizes["hidden"])
        try:
            state = torch.load(path / HEAD_FILES[name], map_location="cpu", weights_only=True)
            head.load_state_dict(state)
        except DAMAGED_HEAD_ERRORS as err:
            raise InputError(
                f"the {name} head of the model in {folder} cannot be read: {first_line(err)}"
            ) from None
        heads[name] = head.to(target).eval()
    return SavedModel(
        TorchHeads(heads["image"], heads["text"], target),
        description["encoder"],
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
    """The index saved for the corpus with this fingerprint, or ``None`` when there is none."""
    folder = _index_folder(model_folder, fingerprint)
    if not (folder / INDEX_FILE).is_file():
        return None
    return SearchIndex(
        faiss.read_index(str(folder / "images.faiss")),
        faiss.read_index(str(folder / "texts.faiss")),
        pq.read_table(folder / "images.parquet"),
        pq.read_table(folder / "texts.parquet"),
        json.loads((folder / INDEX_FILE).read_text()),
    )


def save_index(model_folder: str | os.PathLike, fingerprint: str, index: SearchIndex) -> Path:
    """Write ``index`` under the model folder, keyed by ``fingerprint``; it appears whole or not at all."""
    folder = _index_folder(model_folder, fingerprint)
    with atomic_output(folder, directory=True) as tmp:
        faiss.write_index(index.images, str(tmp / "images.faiss"))
        faiss.write_index(index.texts, str(tmp / "texts.faiss"))
        pq.write_table(index.image_items, tmp / "images.parquet")
        pq.write_table(index.text_items, tmp / "texts.parquet")
        (tmp / INDEX_FILE).write_text(json.dumps(index.info, indent=2, sort_keys=True))
    return folder
