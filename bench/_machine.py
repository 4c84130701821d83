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


def write_results(record: dict, out: Path, t_start: float) -> None:
    """Finish a benchmark: the load average after it and its duration into ``record``, the JSON
    written atomically to ``out``, and a last line that says how busy the machine was."""
    import json
    import time

    record["machine"]["loadavg_after"] = list(os.getloadavg())
    record["seconds"] = time.perf_counter() - t_start
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1, default=_json_default) + "\n")
    tmp.replace(out)
    la0, la1 = record["machine"]["loadavg_before"], record["machine"]["loadavg_after"]
    print(
        f"\nload average (1/5/15 min) before {la0[0]:.2f}/{la0[1]:.2f}/{la0[2]:.2f}, "
        f"after {la1[0]:.2f}/{la1[1]:.2f}/{la1[2]:.2f}; {os.cpu_count()} CPUs; "
        f"{record['seconds']:.0f} s; wrote {out}"
    )


def _json_default(obj):
    import numpy as np

    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return str(obj)
