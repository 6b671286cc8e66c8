"""An on-disk cache of embeddings, keyed by encoder id and by the content of each item."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np

from cleanpairs.io.atomic import atomic_output, remove_stale_temporaries

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


class EmbeddingCache:
    """Embeddings of one encoder and one modality, stored as ``.npy`` parts in one folder.

    Each ``store`` call adds one part (a keys file and a float32 matrix, written
    atomically); ``lookup`` memory-maps the parts, so only the rows asked for are read.

    Several processes may share one cache folder: there is no index file for them to update,
    the folder's parts are the index. A part is named by a hash of its content, so two
    processes storing the same embeddings write the same part (and replace it with the same
    bytes), and different embeddings never share a name. Each file appears whole under its
    final name (written beside it, then renamed), and the keys file, which makes a part
    visible, is written after its matrix; a reader sees whole parts or none.
    """

    def __init__(self, root: str | os.PathLike, encoder_id: str, modality: str) -> None:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", encoder_id)[:80]
        tag = hashlib.sha1(encoder_id.encode()).hexdigest()[:10]
        self.folder = Path(root) / f"{slug}-{tag}" / modality
        self._index: dict[bytes, tuple[int, int]] | None = None
        self._parts: list[Path] = []
        self._swept = False

    def _load_index(self) -> dict[bytes, tuple[int, int]]:
        if self._index is None:
            self._index, self._parts = {}, []
            if self.folder.is_dir():
                for keys_file in sorted(self.folder.glob("part-*.keys.npy")):
                    emb_file = keys_file.with_name(keys_file.name.replace(".keys.npy", ".emb.npy"))
                    if not emb_file.exists():
                        continue
                    part = len(self._parts)
                    self._parts.append(emb_file)
                    keys = np.load(keys_file)
                    for row in range(len(keys)):
                        self._index[keys[row].tobytes()] = (part, row)
        return self._index

    def lookup(self, digests: list[bytes]) -> tuple[np.ndarray, np.ndarray | None]:
        """Return which ``digests`` are cached (a boolean mask) and their embeddings, in order."""
        index = self._load_index()
        found = np.array([d in index for d in digests], dtype=bool)
        if not found.any():
            return found, None
        hits = [index[d] for d, f in zip(digests, found, strict=True) if f]
        matrices = [np.load(p, mmap_mode="r") for p in self._parts]
        dim = matrices[hits[0][0]].shape[1]
        out = np.empty((len(hits), dim), dtype=np.float32)
        by_part: dict[int, list[tuple[int, int]]] = {}
        for pos, (part, row) in enumerate(hits):
            by_part.setdefault(part, []).append((pos, row))
        for part, items in by_part.items():
            positions = np.array([p for p, _ in items])
            rows = np.array([r for _, r in items])
            out[positions] = matrices[part][rows]
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
