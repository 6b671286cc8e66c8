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


class _KeyTable:
    """Every key of a cache folder as a sorted table of 8-byte prefixes, 16 bytes a key.

    The first 8 bytes of a content digest place it; the rest is checked against the part's
    keys file (memory-mapped) only for the keys a lookup finds. A dict of the same keys costs
    about 150 bytes each, too much for a corpus of 10^8 items.
    """

    def __init__(self, parts: list[tuple[Path, Path]]) -> None:
        self.parts = parts
        prefixes, owners, rows = [], [], []
        for part, (keys_file, _) in enumerate(parts):
            prefix = _prefix(np.load(keys_file, mmap_mode="r"))
            prefixes.append(prefix.astype(np.uint64))
            owners.append(np.full(len(prefix), part, dtype=np.uint32))
            rows.append(np.arange(len(prefix), dtype=np.uint32))
        prefix = np.concatenate(prefixes) if prefixes else np.zeros(0, np.uint64)
        order = np.argsort(prefix, kind="stable")
        self.prefix = prefix[order]
        del prefix
        self.owner = np.concatenate(owners)[order] if owners else np.zeros(0, np.uint32)
        self.row = np.concatenate(rows)[order] if rows else np.zeros(0, np.uint32)

    def find(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The part and row of each query key, -1 where it is not cached."""
        owner = np.full(len(queries), -1, dtype=np.int64)
        row = np.full(len(queries), -1, dtype=np.int64)
        n = len(self.prefix)
        if not n or not len(queries):
            return owner, row
        query_prefix = _prefix(queries).astype(np.uint64)
        pos = np.searchsorted(self.prefix, query_prefix, side="left")
        todo = np.flatnonzero(pos < n)
        # Keys sharing their first 8 bytes sit next to each other: walk them until the whole key matches.
        while len(todo):
            at = pos[todo]
            same = self.prefix[at] == query_prefix[todo]
            todo, at = todo[same], at[same]
            matched = np.zeros(len(todo), dtype=bool)
            for part in np.unique(self.owner[at]):
                here = np.flatnonzero(self.owner[at] == part)
                keys = np.load(self.parts[part][0], mmap_mode="r")
                matched[here] = np.all(keys[self.row[at[here]]] == queries[todo[here]], axis=1)
            owner[todo[matched]] = self.owner[at[matched]]
            row[todo[matched]] = self.row[at[matched]]
            todo = todo[~matched]
            pos[todo] += 1
            todo = todo[pos[todo] < n]
        return owner, row


def _prefix(keys: np.ndarray) -> np.ndarray:
    """The first 8 bytes of each key as a big-endian integer."""
    if not len(keys):
        return np.zeros(0, dtype=">u8")
    return np.ascontiguousarray(keys[:, :8]).view(">u8")[:, 0]


class EmbeddingCache:
    """Embeddings of one encoder and one modality, stored as ``.npy`` parts in one folder.

    Each ``store`` call adds one part (a keys file and a float32 matrix, written
    atomically); ``lookup`` memory-maps the parts, so only the rows asked for are read. The
    index of the parts' keys is a sorted table of 8-byte key prefixes searched with
    ``np.searchsorted`` (16 bytes a key), not a dict of every key.

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
        self._index: _KeyTable | None = None
        self._swept = False

    def _load_index(self) -> _KeyTable:
        if self._index is None:
            parts = []
            if self.folder.is_dir():
                for keys_file in sorted(self.folder.glob("part-*.keys.npy")):
                    emb_file = keys_file.with_name(keys_file.name.replace(".keys.npy", ".emb.npy"))
                    if emb_file.exists():
                        parts.append((keys_file, emb_file))
            self._index = _KeyTable(parts)
        return self._index

    def lookup(self, digests: list[bytes]) -> tuple[np.ndarray, np.ndarray | None]:
        """Return which ``digests`` are cached (a boolean mask) and their embeddings, in order."""
        table = self._load_index()
        if not digests:
            return np.zeros(0, dtype=bool), None
        queries = np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(len(digests), DIGEST_BYTES)
        owner, row = table.find(queries)
        found = owner >= 0
        if not found.any():
            return found, None
        owner, row = owner[found], row[found]
        out: np.ndarray | None = None
        for part in np.unique(owner):
            matrix = np.load(table.parts[part][1], mmap_mode="r")
            if out is None:
                out = np.empty((len(owner), matrix.shape[1]), dtype=np.float32)
            here = np.flatnonzero(owner == part)
            # Ascending rows read the memory map front to back.
            here = here[np.argsort(row[here], kind="stable")]
            out[here] = matrix[row[here]]
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
