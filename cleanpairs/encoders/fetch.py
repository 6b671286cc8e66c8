"""Whether an open_clip pretrained tag's weights can be had: cached, or fetchable right now.

Without this check, a tag whose weights are neither cached nor reachable (``HF_HUB_OFFLINE=1``,
no network) costs minutes of retries and several lines of warnings before failing; with it, the
run stops within seconds with one line."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

from cleanpairs.errors import EncoderError

CONNECT_TIMEOUT_S = 3.0
_TRUE = {"1", "true", "yes", "on"}


def offline_flag() -> str | None:
    """The environment variable that forbids network access to the hub, where one is set."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").strip().lower() in _TRUE:
            return name
    return None


def _hub_files(cfg: dict) -> tuple[str, list[str]]:
    """The hub repository of a tag and the file names open_clip tries there, in its order."""
    repo, filename = os.path.split(cfg["hf_hub"])  # "org/model/" names the default file
    if not filename:
        return repo, ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    if filename.endswith((".bin", ".pth")):
        return repo, [filename[:-4] + ".safetensors", filename]
    return repo, [filename]


def _cached(cfg: dict) -> bool:
    if cfg.get("file"):
        return os.path.isfile(cfg["file"])
    if cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        repo, names = _hub_files(cfg)
        return any(isinstance(try_to_load_from_cache(repo, name), str) for name in names)
    return False


def _reachable(host: str) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=CONNECT_TIMEOUT_S):
            return True
    except OSError:
        return False


def check_weights_available(arch: str, tag: str, cfg: dict) -> None:
    """Raise :class:`EncoderError` at once where ``arch/tag``'s weights are not cached and cannot
    be fetched: the hub is switched off by the environment, or its host does not answer within
    :data:`CONNECT_TIMEOUT_S` seconds. ``cfg`` is open_clip's pretrained config of the tag."""
    if not cfg or _cached(cfg):
        return
    host = "huggingface.co" if cfg.get("hf_hub") else urlparse(cfg.get("url", "")).hostname
    if host is None:
        return
    advice = "fetch them once where there is network, or give a local checkpoint as openclip:ARCH:PATH"
    flag = offline_flag()
    if flag is not None:
        raise EncoderError(f"open_clip weights {arch}/{tag} are not cached and {flag} is set; {advice}")
    if not _reachable(host):
        raise EncoderError(
            f"open_clip weights {arch}/{tag} are not cached and {host} cannot be reached; {advice}"
        )
