"""An on-disk cache of embeddings, keyed by encoder id and by the content of each item."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np

from cleanpairs.io.atomic import atomic_output, remove_stale_temporaries
from cleanpairs.io.keyindex import MERGE_PARTS, SortedKeys, open_index

DIGEST_BYTES = 20


def default_cache_dir() -> Path:
    """``$CLEANPAIRS_CACHE``, else ``$XDG_CACHE_HOME/cleanpairs``, else ``~/.cache/cleanpairs``."""
    if os.environ.get("CLEANPAIRS_CACHE"):
        return Path(os.environ["CLEANPAIRS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cleanpairs"


def content_digest(data: bytes | str) -> bytes:
    """The cache key of one item: a hash of its bytes (an image file) or its text."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha1(data, usedforsecurity=False).digest()


def _matrix_of(keys_file: Path) -> Path:
    return keys_file.with_name(keys_file.name.replace(".keys.npy", ".emb.npy"))


class EmbeddingCache:
    """Embeddings of one encoder and one modality, stored as ``.npy`` parts in one folder.

    Each ``store`` call adds one part (a keys file and a float32 matrix, written
    atomically); ``lookup`` memory-maps the parts, so only the rows asked for are read. The
    parts' keys are found through a sorted index of their 8-byte prefixes kept beside them and
    memory-mapped (:mod:`cleanpairs.io.keyindex`), not a dict of every key: parts added since
    it was written are indexed in memory until ``merge_parts`` of them are merged into it.

    Several processes may share one cache folder: the parts are the data, an index only a
    summary of some of them (named by the parts it covers). A part is named by a hash of its content, so two
    processes storing the same embeddings write the same part (and replace it with the same
    bytes), and different embeddings never share a name. Each file appears whole under its
    final name (written beside it, then renamed), and the keys file, which makes a part
    visible, is written after its matrix; a reader sees whole parts or none.
    """

    def __init__(
        self, root: str | os.PathLike, encoder_id: str, modality: str, *, merge_parts: int = MERGE_PARTS
    ) -> None:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", encoder_id)[:80]
        tag = hashlib.sha1(encoder_id.encode()).hexdigest()[:10]
        self.folder = Path(root) / f"{slug}-{tag}" / modality
        self.merge_parts = merge_parts
        self._index: list[SortedKeys] | None = None
        self._swept = False

    def _load_index(self) -> list[SortedKeys]:
        if self._index is None:
            parts = []
            if self.folder.is_dir():
                for keys_file in sorted(self.folder.glob("part-*.keys.npy")):
                    if _matrix_of(keys_file).exists():
                        parts.append(keys_file)
            self._index = open_index(self.folder, parts, merge_parts=self.merge_parts) if parts else []
        return self._index

    def lookup(self, digests: list[bytes]) -> tuple[np.ndarray, np.ndarray | None]:
        """Return which ``digests`` are cached (a boolean mask) and their embeddings, in order."""
        found = np.zeros(len(digests), dtype=bool)
        indexes = self._load_index()
        if not digests or not indexes:
            return found, None
        queries = np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(len(digests), DIGEST_BYTES)
        hits: list[tuple[Path, np.ndarray, np.ndarray]] = []
        for index in indexes:
            todo = np.flatnonzero(~found)
            part, row = index.find(queries[todo])
            found[todo[part >= 0]] = True
            for one in np.unique(part[part >= 0]):
                here = part == one
                hits.append((index.parts[one], todo[here], row[here]))
        if not hits:
            return found, None
        slot = np.cumsum(found) - 1
        out: np.ndarray | None = None
        for keys_file, positions, rows in hits:
            matrix = np.load(_matrix_of(keys_file), mmap_mode="r")
            if out is None:
                out = np.empty((int(found.sum()), matrix.shape[1]), dtype=np.float32)
            # Ascending rows read the memory map front to back.
            ascending = np.argsort(rows, kind="stable")
            out[slot[positions[ascending]]] = matrix[rows[ascending]]
        return found, out

    def store(self, digests: list[bytes], embeddings: np.ndarray) -> None:
        """Add embeddings for ``digests`` (one row each) as a new part."""
        if not digests:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        if not self._swept:
            # Parts of runs killed mid-write; once per instance, as listing the folder costs.
            remove_stale_temporaries(self.folder, every_target=True)
            self._swept = True
        # Raw bytes, not numpy's "S" strings, which drop a digest's trailing zero bytes.
        keys = np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(len(digests), DIGEST_BYTES)
        matrix = np.ascontiguousarray(embeddings, dtype=np.float32)
        content = hashlib.sha1(keys.tobytes(), usedforsecurity=False)
        content.update(f"{matrix.shape}".encode())
        content.update(matrix.tobytes())
        name = f"part-{content.hexdigest()}"
        with atomic_output(self.folder / f"{name}.emb.npy", sweep=False) as tmp, open(tmp, "wb") as fh:
            np.save(fh, matrix)
        # The keys file makes a part visible, so it is written last.
        with atomic_output(self.folder / f"{name}.keys.npy", sweep=False) as tmp, open(tmp, "wb") as fh:
            np.save(fh, keys)
        self._index = None
