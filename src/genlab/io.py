"""Files that are never half-written and weights that are never silently wrong: atomic writes,
checked state-dict loading and verified safetensors reads, used by every layer that writes or reads
weights (checkpoints, feature networks, stage-1 runs)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from genlab.errors import CheckpointError


def cache_root() -> Path:
    """Where genlab caches what it computes once (feature networks, decoded image folders):
    ``$GENLAB_CACHE``, else ``~/.cache/genlab``."""
    root = os.environ.get("GENLAB_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "genlab"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_state_dict_checked(
    module: torch.nn.Module, state: dict[str, torch.Tensor], what: str
) -> None:
    """``module.load_state_dict`` with a message naming the first missing or mismatched tensor."""
    own = module.state_dict()
    for name, t in own.items():
        if name not in state:
            raise CheckpointError(f"{what}: parameter {name!r} is missing from the checkpoint")
        if tuple(state[name].shape) != tuple(t.shape):
            raise CheckpointError(
                f"{what}: parameter {name!r} has shape {tuple(state[name].shape)} in the checkpoint "
                f"but {tuple(t.shape)} in the model (was the run trained with another config?)"
            )
    extra = sorted(set(state) - set(own))
    if extra:
        raise CheckpointError(f"{what}: the checkpoint has unexpected parameter {extra[0]!r}")
    module.load_state_dict(state)
