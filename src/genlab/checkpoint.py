"""Checkpoints: tensors in safetensors, everything else in a JSON sidecar; never pickle.

A checkpoint at step k is two files in ``<run>/checkpoints/``::

    step_0000k.safetensors   model.*, ema.*, optim.<i>.<state>, rng.* tensors
    step_0000k.json          step, data position, optimizer/scheduler scalars, size and sha256

Both are written to a temporary file, flushed, fsynced and renamed, and the sidecar is written last,
so a checkpoint whose sidecar exists is complete. Loading verifies the size and checksum; a corrupt
checkpoint is reported and the previous good one is used.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import save

from genlab.errors import CheckpointError
from genlab.io import atomic_write_bytes

FORMAT_VERSION = 1
_NAME = re.compile(r"^step_(\d{7,})\.json$")


BEST = "best"  # the checkpoint with the lowest validation loss (never rotated away)


def checkpoint_paths(directory: Path, step: int | str) -> tuple[Path, Path]:
    """The weights and sidecar paths of checkpoint ``step`` (an int) or a named one (``"best"``)."""
    stem = f"step_{step:07d}" if isinstance(step, int) else step
    return directory / f"{stem}.safetensors", directory / f"{stem}.json"


def save_checkpoint(
    directory: str | Path,
    step: int,
    tensors: dict[str, torch.Tensor],
    meta: dict[str, Any],
    keep_last: int | None = None,
    name: str | None = None,
) -> Path:
    """Write a checkpoint atomically (as ``name`` when given, e.g. ``"best"``); keep only the newest
    ``keep_last`` numbered ones."""
    directory = Path(directory)
    weights, sidecar = checkpoint_paths(directory, name or step)
    blob = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()})
    meta = dict(meta)
    meta.update(
        format_version=FORMAT_VERSION,
        step=step,
        weights=weights.name,
        size=len(blob),
        sha256=hashlib.sha256(blob).hexdigest(),
    )
    try:
        atomic_write_bytes(weights, blob)
        atomic_write_bytes(sidecar, json.dumps(meta, indent=1).encode())
    except OSError as e:  # disk full, permissions...: keep what was there before
        if name is None:
            weights.unlink(missing_ok=True)  # an orphan without its sidecar is never listed
        previous = list_checkpoints(directory)
        kept = (
            f"the last good checkpoint (step {previous[-1]}) is intact"
            if previous
            else "no earlier checkpoint exists"
        )
        raise CheckpointError(
            f"could not write checkpoint {weights.name} in {directory}: {e.strerror or e}; {kept}"
        ) from None
    if keep_last:
        for old in list_checkpoints(directory)[:-keep_last]:
            for p in checkpoint_paths(directory, old):
                p.unlink(missing_ok=True)
    return weights


def list_checkpoints(directory: str | Path) -> list[int]:
    """Steps of the checkpoints whose sidecar exists, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    steps = [int(m.group(1)) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return sorted(steps)


def load_checkpoint(directory: str | Path, step: int | str) -> tuple[dict[str, torch.Tensor], dict]:
    """Read and verify one checkpoint; raise :class:`CheckpointError` saying what is wrong."""
    weights, sidecar = checkpoint_paths(Path(directory), step)
    try:
        meta = json.loads(sidecar.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint sidecar missing: {sidecar}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint sidecar {sidecar} is corrupt: {e}") from None
    if not isinstance(meta, dict) or "sha256" not in meta or "size" not in meta:
        raise CheckpointError(f"checkpoint sidecar {sidecar} lacks its size and checksum")
    try:
        blob = weights.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint weights missing: {weights}") from None
    if len(blob) != meta["size"]:
        raise CheckpointError(
            f"checkpoint {weights} is truncated or damaged: {len(blob)} bytes, expected {meta['size']}"
        )
    if hashlib.sha256(blob).hexdigest() != meta["sha256"]:
        raise CheckpointError(
            f"checkpoint {weights} is corrupt: its sha256 does not match the sidecar"
        )
    try:
        from safetensors.torch import load as load_bytes

        tensors = load_bytes(blob)
    except (SafetensorError, Exception) as e:  # noqa: BLE001 - any parse failure is corruption
        raise CheckpointError(f"checkpoint {weights} cannot be parsed: {e}") from None
    return tensors, meta


def load_latest(directory: str | Path) -> tuple[dict[str, torch.Tensor], dict] | None:
    """The newest checkpoint that verifies, warning about any newer corrupt ones; None if none."""
    problems = []
    for step in reversed(list_checkpoints(directory)):
        try:
            return load_checkpoint(directory, step)
        except CheckpointError as e:
            problems.append(str(e))
            warnings.warn(f"{e}; trying the previous checkpoint", stacklevel=2)
    if problems:
        raise CheckpointError("no usable checkpoint: " + "; ".join(problems))
    return None
