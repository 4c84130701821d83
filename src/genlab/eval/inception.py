"""The optional extra: FID with the Inception-v3 network, through torchmetrics, on the same samples
and reference images as genlab's own evaluation.

genlab never downloads weights, so this runs only when the user names a local weights file (the
one torch-fidelity uses, ``pt_inception-2015-12-05-6726825d.pth``). That file is a PyTorch pickle:
loading it can run code, so genlab says so each time and the user must trust the file.
torchmetrics and torch-fidelity are not genlab dependencies (``pip install torchmetrics
torch-fidelity``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from genlab.data.base import require_file
from genlab.errors import DataError, GenlabError

TRUST = "is a PyTorch pickle: loading it can run arbitrary code; only use a weights file you trust"


def load_inception(weights: str | Path) -> Any:
    """torchmetrics' ``FrechetInceptionDistance`` (2048-d pool features; its Inception resizes to
    299) with the local weights file ``weights``; a clear error when the file or the packages are
    missing. Called before any sampling, so that a long evaluation does not fail at its end."""
    path = require_file(weights, "Inception weights file")
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError:
        raise GenlabError(
            "--inception needs torchmetrics and torch-fidelity, which genlab does not install: "
            "pip install torchmetrics torch-fidelity"
        ) from None
    print(f"genlab eval: {str(path)!r} {TRUST}", file=sys.stderr)
    try:
        return FrechetInceptionDistance(
            feature=2048, normalize=True, feature_extractor_weights_path=str(path)
        )
    except Exception as e:  # noqa: BLE001 - a wrong or corrupt file fails inside torch-fidelity
        raise GenlabError(f"could not load Inception weights from {str(path)!r}: {e}") from None


def inception_fid(
    fid: Any, samples: torch.Tensor, reference: torch.Tensor, *, batch_size: int = 100
) -> dict[str, Any]:
    """FID by ``fid`` (:func:`load_inception`) between ``samples`` and ``reference``, images
    ``(n, C, H, W)`` in ``[-1, 1]`` (grayscale repeated to RGB)."""
    if samples.dim() != 4 or samples.shape[1] not in (1, 3):
        raise DataError(
            f"Inception FID takes grayscale or RGB images, got samples of shape "
            f"{tuple(samples.shape)}"
        )
    fid.reset()
    for images, real in ((reference, True), (samples, False)):
        for chunk in torch.split(images, batch_size):
            rgb = ((chunk.float().clamp(-1, 1) + 1) / 2).expand(-1, 3, -1, -1)
            fid.update(rgb, real=real)
    return {
        "value": float(fid.compute()),
        "unit": "Inception feature units²",
        "n": len(samples),
        "help": "torchmetrics FrechetInceptionDistance (Inception-v3 pool3) on the same samples "
        "and reference as the metrics above",
    }
