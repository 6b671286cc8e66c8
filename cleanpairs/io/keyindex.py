"""A sorted index of the content keys of a folder of parts, kept on disk and memory-mapped.

A cache folder holds parts (``part-HASH.keys.npy``: 20-byte keys; beside it the part's rows).
Its index places every key by its first 8 bytes: a sorted array of those prefixes and, for
each, the key's place in the parts laid end to end. The index is written as files beside
the parts (``index-HASH.parts.json``, the parts it covers in order; ``index-HASH.place.npy``;
``index-HASH.prefix.npy``, written last, which makes it visible) and read back memory-mapped,
so a reader holds nothing per key. Parts added since are indexed in memory (16 bytes a key)
until there are ``merge_parts`` of them; then the reader writes a new index covering them
too, merged a chunk at a time, and removes the indexes the new one covers.

Several processes may share the folder: an index is named by the parts it covers, written
beside its final name and moved into place, so two processes merging at once write the same
bytes; a reader that finds an index removed under it lists the folder again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cleanpairs.io.atomic import atomic_output

PARTS_SUFFIX = ".parts.json"
PLACE_SUFFIX = ".place.npy"
PREFIX_SUFFIX = ".prefix.npy"
MERGE_PARTS = 256
"""Parts outside the on-disk index before a reader merges them into a new one."""
CHUNK = 1 << 20
"""Entries merged at a time: what a merge holds in memory besides the parts it adds."""


def key_prefix(keys: np.ndarray) -> np.ndarray:
    """The first 8 bytes of each key (rows of bytes) as an integer that sorts like the bytes."""
    if not len(keys):
        return np.zeros(0, dtype=np.uint64)
    return np.ascontiguousarray(keys[:, :8]).view(">u8")[:, 0].astype(np.uint64)


@dataclass
class SortedKeys:
    """Sorted key prefixes of ``parts`` and each key's place in the parts laid end to end."""

    parts: list[Path]
    """The keys files, in the order their places count."""
    starts: np.ndarray
    """Where each part's keys start in the parts laid end to end (one more entry: the total)."""
    prefix: np.ndarray
    place: np.ndarray

    def find(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The part (a position in ``parts``) and row of each query key, -1 where it is absent."""
        part_of = np.full(len(queries), -1, dtype=np.int64)
        row_of = np.full(len(queries), -1, dtype=np.int64)
        n = len(self.prefix)
        if not n or not len(queries):
            return part_of, row_of
        query_prefix = key_prefix(queries)
        pos = np.searchsorted(self.prefix, query_prefix, side="left")
        todo = np.flatnonzero(pos < n)
        # Keys sharing their first 8 bytes sit next to each other: walk them until the whole key matches.
        while len(todo):
            at = pos[todo]
            same = self.prefix[at] == query_prefix[todo]
            todo, at = todo[same], at[same]
            place = np.asarray(self.place[at], dtype=np.int64)
            part = np.searchsorted(self.starts, place, side="right") - 1
            row = place - self.starts[part]
            matched = np.zeros(len(todo), dtype=bool)
            for one in np.unique(part):
                here = np.flatnonzero(part == one)
                keys = np.load(self.parts[one], mmap_mode="r")
                matched[here] = np.all(keys[row[here]] == queries[todo[here]], axis=1)
            part_of[todo[matched]] = part[matched]
            row_of[todo[matched]] = row[matched]
            todo = todo[~matched]
            pos[todo] += 1
            todo = todo[pos[todo] < n]
        return part_of, row_of


def sort_in_memory(parts: list[Path]) -> SortedKeys:
    """The index of ``parts`` built in memory: 16 bytes a key (24 while it is sorted)."""
    sizes = [len(np.load(keys_file, mmap_mode="r")) for keys_file in parts]
    starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
    prefix = np.empty(int(starts[-1]), dtype=np.uint64)
    for i, keys_file in enumerate(parts):
        prefix[starts[i] : starts[i + 1]] = key_prefix(np.load(keys_file, mmap_mode="r"))
    place = np.argsort(prefix, kind="stable")
    return SortedKeys(parts, starts, prefix[place], place)


def open_index(
    folder: Path, parts: list[Path], *, merge_parts: int = MERGE_PARTS, chunk: int = CHUNK
) -> list[SortedKeys]:
    """The indexes that together cover ``parts`` (keys files of ``folder``): the largest on-disk
    index whose parts are all there, and the rest in memory, merged into a new on-disk index
    first (``chunk`` entries at a time) when ``merge_parts`` or more are left out and the
    folder can be written."""
    for _ in range(3):
        try:
            return _open_index(folder, parts, merge_parts, chunk)
        except FileNotFoundError:
            continue  # an index removed by a process that merged a larger one: list again
    return [sort_in_memory(parts)]


def _open_index(folder: Path, parts: list[Path], merge_parts: int, chunk: int) -> list[SortedKeys]:
    present = {p.name: p for p in parts}
    best: tuple[str, list[str]] | None = None
    for prefix_file in sorted(folder.glob(f"index-*{PREFIX_SUFFIX}")):
        stem = prefix_file.name[: -len(PREFIX_SUFFIX)]
        listed = json.loads((folder / f"{stem}{PARTS_SUFFIX}").read_text())
        names = listed["parts"]
        if all(name in present for name in names) and (best is None or len(names) > len(best[1]["parts"])):
            best = (stem, listed)
    on_disk = None
    if best is not None:
        stem, listed = best
        on_disk = _read(folder, stem, [present[name] for name in listed["parts"]], listed["rows"])
    covered = set(best[1]["parts"]) if best is not None else set()
    rest = sort_in_memory([p for p in parts if p.name not in covered])
    if len(rest.parts) >= merge_parts:
        try:
            return [_write_merged(folder, on_disk, rest, chunk)]
        except OSError:
            pass  # a folder this process may only read: the index stays in memory
    return [index for index in (on_disk, rest) if index is not None and len(index.parts)]


def _write_merged(folder: Path, base: SortedKeys | None, extra: SortedKeys, chunk: int) -> SortedKeys:
    """One on-disk index of ``base``'s parts then ``extra``'s; the indexes it covers are removed."""
    parts = (base.parts if base is not None else []) + extra.parts
    names = [p.name for p in parts]
    stem = "index-" + hashlib.sha1(json.dumps(names).encode(), usedforsecurity=False).hexdigest()
    base_prefix = base.prefix if base is not None else np.zeros(0, np.uint64)
    base_place = base.place if base is not None else np.zeros(0, np.int64)
    offset = int(base.starts[-1]) if base is not None else 0
    n = len(base_prefix) + len(extra.prefix)
    rows = np.diff(np.concatenate([base.starts if base is not None else [0], extra.starts[1:] + offset]))
    with atomic_output(folder / f"{stem}{PARTS_SUFFIX}", sweep=False) as tmp:
        tmp.write_text(json.dumps({"parts": names, "rows": rows.tolist()}))
    # The prefix file makes the index visible, so it is moved into place last (outer block).
    with atomic_output(folder / f"{stem}{PREFIX_SUFFIX}", sweep=False) as tmp_prefix:
        with atomic_output(folder / f"{stem}{PLACE_SUFFIX}", sweep=False) as tmp_place:
            prefix = np.lib.format.open_memmap(tmp_prefix, mode="w+", dtype=np.uint64, shape=(n,))
            place = np.lib.format.open_memmap(tmp_place, mode="w+", dtype=np.int64, shape=(n,))
            # Where each added key goes among the base's: both are sorted, so a chunk of the
            # base and the added keys that fall inside it are sorted on their own.
            goes = np.searchsorted(base_prefix, extra.prefix, side="right")
            at = 0
            for start in range(0, max(len(base_prefix), 1), chunk):
                stop = min(start + chunk, len(base_prefix))
                last = stop >= len(base_prefix)
                lo = np.searchsorted(goes, start, side="left")
                hi = len(goes) if last else np.searchsorted(goes, stop, side="left")
                chunk_prefix = np.concatenate([base_prefix[start:stop], extra.prefix[lo:hi]])
                chunk_place = np.concatenate([base_place[start:stop], extra.place[lo:hi] + offset])
                order = np.argsort(chunk_prefix, kind="stable")
                prefix[at : at + len(order)] = chunk_prefix[order]
                place[at : at + len(order)] = chunk_place[order]
                at += len(order)
            prefix.flush()
            place.flush()
            del prefix, place
    merged = _read(folder, stem, parts, rows.tolist())
    for other in folder.glob(f"index-*{PARTS_SUFFIX}"):
        other_stem = other.name[: -len(PARTS_SUFFIX)]
        try:
            covered = set(json.loads(other.read_text())["parts"]) <= set(names)
        except FileNotFoundError:  # removed by another process merging at the same time
            continue
        if other_stem != stem and covered:
            # The prefix file first: without it the index is not seen.
            for suffix in (PREFIX_SUFFIX, PLACE_SUFFIX, PARTS_SUFFIX):
                (folder / f"{other_stem}{suffix}").unlink(missing_ok=True)
    return merged


def _read(folder: Path, stem: str, parts: list[Path], rows: list[int]) -> SortedKeys:
    return SortedKeys(
        parts,
        np.concatenate([[0], np.cumsum(rows, dtype=np.int64)]),
        np.load(folder / f"{stem}{PREFIX_SUFFIX}", mmap_mode="r"),
        np.load(folder / f"{stem}{PLACE_SUFFIX}", mmap_mode="r"),
    )
