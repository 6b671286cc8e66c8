"""Which torch device a run uses: shared by the core's trainers, the encoders and model loading."""

from __future__ import annotations

import torch

from cleanpairs.errors import EncoderError


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
