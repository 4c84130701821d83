"""An image folder larger than memory would allow as float32: 200,000 RGB PNGs at 32x32.

Generates the folder once (10 class sub-folders of smooth random colour fields with noise, so the
PNGs compress as photos do, not as constant squares), then, with an empty image cache, runs
`genlab train configs/ddpm-cfg-mnist.yaml data.path=FOLDER trainer.steps=50 --no-eval` twice as a
subprocess, one after the other, alone on the machine: the first start decodes the folder into the
cache, the second maps it. For each start it records the wall time until the trainer's first
progress line (`step 1/50`, stderr with trainer.log_every=1), the total wall time and the peak
resident memory of the process (os.wait4's ru_maxrss). The float32 copy the same images would take
in memory is printed beside them. `--baseline REV` also times genlab at git revision REV (a worktree
in $TMPDIR) on the same folder, e.g. the commit before images stayed uint8.

Run:  PYTHONPATH=src .venv/bin/python bench/image_folder.py [--quick] [--baseline REV]
Writes bench/results/image_folder.json (--quick: 2,000 images, 5 steps, to $TMPDIR).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from _machine import machine_info, write_results

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "image_folder.json"
CONFIG = "configs/ddpm-cfg-mnist.yaml"


def make_folder(folder: Path, n: int, size: int) -> float:
    """``n`` RGB PNGs ``size`` x ``size`` in 10 class sub-folders (skipped when already there)."""
    from PIL import Image

    marker = folder / f".complete-{n}-{size}"
    if marker.exists():
        return 0.0
    shutil.rmtree(folder, ignore_errors=True)
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    for c in range(10):
        (folder / f"class{c}").mkdir(parents=True)
    block = 1000
    for start in range(0, n, block):
        k = min(block, n - start)
        coarse = rng.uniform(0, 255, (k, 4, 4, 3)).astype(np.float32)
        up = coarse.repeat(size // 4, 1).repeat(size // 4, 2)  # blocks, then a blur of noise
        img = np.clip(up + rng.normal(0, 12, up.shape), 0, 255).astype(np.uint8)
        for j in range(k):
            i = start + j
            Image.fromarray(img[j]).save(folder / f"class{i % 10}" / f"{i:07d}.png")
        if start % 20000 == 0:
            print(f"  made {start + k:,}/{n:,} images", file=sys.stderr, flush=True)
    marker.touch()
    return time.perf_counter() - t0


def start(cmd: list[str], env: dict, cwd: Path) -> dict:
    """Run ``cmd``; seconds to its first `step 1/` line on stderr, total seconds, peak RSS."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    first: list[float] = []
    lines: list[str] = []

    def read_err() -> None:
        for line in proc.stderr:
            lines.append(line.rstrip())
            if not first and " step 1/" in line:
                first.append(time.perf_counter() - t0)

    reader = threading.Thread(target=read_err, daemon=True)
    reader.start()
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join()
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n" + "\n".join(lines[-30:]))
    return {
        "seconds_to_step_1": first[0] if first else None,
        "seconds_total": seconds,
        "peak_rss_mib": usage.ru_maxrss / 1024,  # Linux: KiB
        "stderr_tail": lines[-6:],
        "stdout_tail": out.splitlines()[-3:],
    }


def two_starts(
    src: Path, config: str, data: list[str], steps: int, work: Path, label: str, first: str
) -> tuple[list[dict], Path]:
    """Two starts of ``genlab train CONFIG DATA...`` from the tree ``src``, the first on an
    empty cache (``first`` says what it does there): their records, and the cache folder."""
    cache = work / f"cache-{label}"
    shutil.rmtree(cache, ignore_errors=True)
    env = {**os.environ, "GENLAB_CACHE": str(cache), "PYTHONPATH": str(src / "src")}
    runs = []
    for k in (1, 2):
        out = work / f"run-{label}-{k}"
        shutil.rmtree(out, ignore_errors=True)
        cmd = [
            sys.executable, "-m", "genlab", "train", config, "--out", str(out), "--no-eval",
            "data.name=null", *data, f"trainer.steps={steps}",
            "trainer.log_every=1", "trainer.progress_every=0.001",
            f"trainer.checkpoint_every={steps}",
        ]  # fmt: skip
        r = start(cmd, env, src)
        r["start"] = first if k == 1 else "second (cache present)"
        r["command"] = " ".join(cmd[2:])
        runs.append(r)
        print(
            f"{label:>9} start {k}: step 1 after {r['seconds_to_step_1']:.1f} s, "
            f"{steps} steps in {r['seconds_total']:.1f} s, peak RSS {r['peak_rss_mib']:.0f} MiB",
            flush=True,
        )
        shutil.rmtree(out, ignore_errors=True)
    return runs, cache


def arm(src: Path, folder: Path, steps: int, work: Path, label: str) -> list[dict]:
    """Two starts, the first on an empty cache, of genlab from ``src`` on ``folder``."""
    data = [f"data.path={folder}"]
    return two_starts(src, CONFIG, data, steps, work, label, "first (decodes the folder)")[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2,000 images, 5 steps, to $TMPDIR")
    ap.add_argument("--images", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--folder", help="where the generated folder lives (default: in $TMPDIR)")
    ap.add_argument("--baseline", help="also time genlab at this git revision")
    args = ap.parse_args()
    t_start = time.perf_counter()
    n, steps = (2000, 5) if args.quick else (args.images, args.steps)
    tmp = Path(tempfile.gettempdir())
    folder = Path(args.folder) if args.folder else tmp / f"genlab-png-{n}-{args.size}"
    out = tmp / "image_folder.json" if args.quick else RESULTS
    work = tmp / "genlab-image-folder-bench"
    work.mkdir(exist_ok=True)
    record: dict = {
        "machine": {**machine_info(), "loadavg_before": list(os.getloadavg())},
        "images": n,
        "size": args.size,
        "steps": steps,
        "config": CONFIG,
        "folder_bytes": None,
        "float32_bytes": n * 3 * args.size * args.size * 4,
        "uint8_bytes": n * 3 * args.size * args.size,
    }
    made = make_folder(folder, n, args.size)
    if made:
        print(f"made {n:,} PNGs in {folder} in {made:.0f} s")
    record["folder_bytes"] = sum(f.stat().st_size for f in folder.rglob("*.png"))
    record["genlab"] = arm(ROOT, folder, steps, work, "genlab")
    if args.baseline:
        tree = tmp / f"genlab-at-{args.baseline}"
        if not tree.exists():
            subprocess.run(
                ["git", "worktree", "add", "--detach", str(tree), args.baseline],
                cwd=ROOT,
                check=True,
            )
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=tree, capture_output=True, text=True, check=True
        ).stdout.strip()
        record["baseline"] = {"revision": rev, "runs": arm(tree, folder, steps, work, "baseline")}
    print(
        f"\nthe images as float32 would take {record['float32_bytes'] / 2**20:,.0f} MiB; as uint8 "
        f"{record['uint8_bytes'] / 2**20:,.0f} MiB; the PNGs {record['folder_bytes'] / 2**20:,.0f} MiB"
    )
    write_results(record, out, t_start)


if __name__ == "__main__":
    main()
