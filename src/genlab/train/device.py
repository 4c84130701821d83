"""Which device a run trains on (``trainer.device``), with a clear error for one this machine lacks."""

from __future__ import annotations

import torch

from genlab.errors import GenlabError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then the CPU; anything else is passed to ``torch.device``."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise GenlabError(f"trainer.device={name!r} is not a device: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise GenlabError(
            f"trainer.device={name!r} but CUDA is not available here; use cpu or auto"
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise GenlabError(
            f"trainer.device={name!r} but this machine has {torch.cuda.device_count()} CUDA "
            "device(s)"
        )
    mps = getattr(torch.backends, "mps", None)
    if dev.type == "mps" and not (mps and mps.is_available()):
        raise GenlabError(f"trainer.device={name!r} but MPS is not available here; use cpu or auto")
    return dev
