"""What every benchmark records about the machine and the code it measured (imported by bench/*.py,
which run as scripts from the repository root, so this directory is on their path)."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
THREAD_VARS = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def version(module: str) -> str | None:
    """The installed version of a distribution, or None."""
    try:
        from importlib.metadata import version as _version

        return _version(module)
    except Exception:
        return None


def git(*args: str) -> str | None:
    """``git ARGS`` in the repository (stdout), or None."""
    try:
        out = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
        )
        return out.stdout.strip()
    except Exception:
        return None


def machine_info(**peers: str | None) -> dict:
    """Date, platform, library versions (``peers``: the comparison libraries' versions), the
    genlab commit and whether ``src/`` had uncommitted changes, and the threading variables."""
    import numpy as np
    import torch

    dirty = git("status", "--porcelain", "src")
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "executable": sys.executable,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads_default": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "numpy": np.__version__,
        "scipy": version("scipy"),
        "pot": version("pot"),
        "torchdiffeq": version("torchdiffeq"),
        **peers,
        "genlab_git_head": git("rev-parse", "HEAD"),
        "genlab_src_dirty": None if dirty is None else bool(dirty),
        "env": {k: os.environ.get(k) for k in THREAD_VARS},
    }
