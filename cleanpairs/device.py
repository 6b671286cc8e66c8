"""Which torch device a run uses: shared by the core's trainers, the encoders and model loading."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from cleanpairs.errors import EncoderError

FIT_THREADS = 1
"""torch's CPU threads while a method fits (docs/benchmarks.md, "CPU threads"): its heads are
small, so a second thread saves less than it costs to synchronise, and a thread that waits for a
shared core stalls every step of the other."""

SCORE_THREADS = 1
"""torch's CPU threads while a fitted method scores pairs (``score_pairs``: large blocks)."""


def resolve_device(device: str) -> torch.device:
    """``auto`` is CUDA where there is one, else the CPU; other values are passed to torch.

    Raises
    ------
    EncoderError
        The name is not a torch device, or names CUDA where torch sees none.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise EncoderError(f"unknown device {device!r}: {err}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise EncoderError(f"device {device!r} was asked for, but torch sees no CUDA device")
    return resolved


@contextmanager
def cpu_threads(device: torch.device, threads: int) -> Iterator[None]:
    """Run the block with ``threads`` torch CPU threads, then put back the number there was; on a
    GPU the block runs as it is."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
