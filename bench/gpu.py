"""Every family's training step on the devices at hand: the CPU, and on a CUDA GPU fp32, bf16 and
compiled (`trainer.compile=true`, bf16).

For each family's tiny recipe (tests/families.py, the recipes of the resume and 1-vs-2-process
tests) it builds the trainer, takes `--warm` steps, then times `--steps` steps (the device
synchronised before and after), and records ms per step, examples (or tokens) per second, whether
every loss was finite, the loss of the last step, and on CUDA the peak memory allocated. For the
GPT it adds the model-FLOPs utilisation (6 x parameters x tokens per second over the GPU's dense
bf16 peak, PaLM's definition without the attention term). Without a GPU only the CPU column is
measured, the script says so, and the JSON goes to $TMPDIR.

Run:  PYTHONPATH=src:tests .venv/bin/python bench/gpu.py [--quick] [--families a,b]
(or `bash bench/gpu_check.sh`, which runs the `gpu` tests first).
Writes bench/results/gpu.json on a GPU; $TMPDIR/gpu.json without one or with --quick.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

import torch  # noqa: E402
from _machine import machine_info, write_results  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "gpu.json"
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12}  # dense, FLOP/s


def arms(cuda: bool) -> list[tuple[str, str, str, bool]]:
    """(label, device, precision, compile) of each column."""
    out = [("cpu", "cpu", "fp32", False)]
    if cuda:
        out += [("cuda fp32", "cuda", "fp32", False), ("cuda bf16", "cuda", "bf16", False),
                ("cuda bf16 compiled", "cuda", "bf16", True)]  # fmt: skip
    return out


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure(name: str, device: str, precision: str, compiled: bool, steps: int, warm: int) -> dict:
    from families import RECIPES

    import genlab
    from genlab.train.trainer import Trainer

    tiny = RECIPES[name]
    cfg = genlab.load_config(tiny.path, tiny.args(
        f"trainer.device={device}", f"trainer.precision={precision}",
        f"trainer.compile={str(compiled).lower()}", "trainer.log_every=1000000",
        "trainer.checkpoint_every=1000000",
    ))  # fmt: skip
    data = genlab.load_data(cfg)
    torch.manual_seed(0)
    model = genlab.build_model(cfg, data)
    out = Path(tempfile.mkdtemp(prefix=f"gpu-{name}-"))
    tr = Trainer(model, data, cfg, out)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    tr.model.train()
    try:
        for _ in range(warm):
            tr.train_step()
        sync(device)
        t0 = time.perf_counter()
        history = [tr.train_step() for _ in range(steps)]  # device tensors: read after timing
        sync(device)
        seconds = time.perf_counter() - t0
        losses = history[-1]
        finite = all(bool(torch.isfinite(v).all()) for h in history for v in h.values())
    finally:
        tr.close()
    per = cfg.trainer.batch_size * (getattr(model, "window", None) or 1)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    row = {
        "ms_per_step": 1000 * seconds / steps,
        "examples_per_s": per * steps / seconds,
        "unit": "tokens" if getattr(model, "window", None) else "examples",
        "finite": finite,
        "last_loss": {k: float(v) for k, v in losses.items()},
        "params": params,
        "peak_memory_mib": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
    }
    if name == "gpt" and device == "cuda":
        gpu = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_BF16.items() if k in gpu), None)
        achieved = 6 * params * row["examples_per_s"]
        row["model_flops_per_s"] = achieved
        row["mfu"] = None if peak is None else achieved / peak
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 steps each, to $TMPDIR")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warm", type=int, default=3)
    ap.add_argument("--families", help="comma-separated tiny recipe names (default: all)")
    args = ap.parse_args()
    from families import TINY

    t_start = time.perf_counter()
    cuda = torch.cuda.is_available()
    steps, warm = (2, 1) if args.quick else (args.steps, args.warm)
    names = args.families.split(",") if args.families else sorted(TINY)
    out = RESULTS if cuda and not args.quick else Path(tempfile.gettempdir()) / "gpu.json"
    record: dict = {
        "machine": {**machine_info(), "loadavg_before": list(os.getloadavg())},
        "gpu": torch.cuda.get_device_name() if cuda else None,
        "steps": steps,
        "warm": warm,
        "families": {},
    }
    if not cuda:
        print("no CUDA GPU here (torch.cuda.is_available() is False): measuring the CPU only",
              flush=True)  # fmt: skip
    columns = arms(cuda)
    print(f"{'family':<16}" + "".join(f"{c[0]:>22}" for c in columns) + "  (ms/step)")
    for name in names:
        rows = {}
        for label, device, precision, compiled in columns:
            try:
                rows[label] = measure(name, device, precision, compiled, steps, warm)
            except Exception as e:  # recorded, and the check goes on with the next column
                rows[label] = {"error": f"{type(e).__name__}: {e}"[:500]}
        record["families"][name] = rows
        cells = []
        for label, *_ in columns:
            r = rows[label]
            cells.append("error" if "error" in r else
                         f"{r['ms_per_step']:.1f}{'' if r['finite'] else ' NaN'}")  # fmt: skip
        print(f"{name:<16}" + "".join(f"{c:>22}" for c in cells), flush=True)
    bad = [f"{n} ({c})" for n, rows in record["families"].items() for c, r in rows.items()
           if "error" in r or not r.get("finite", True)]  # fmt: skip
    record["failed"] = bad
    if "gpt" in record["families"] and cuda:
        mfu = record["families"]["gpt"].get("cuda bf16 compiled", {}).get("mfu")
        if mfu is not None and math.isfinite(mfu):
            print(f"GPT model-FLOPs utilisation (bf16, compiled): {100 * mfu:.1f}%")
    write_results(record, out, t_start)
    if bad:
        print("failed or not finite: " + ", ".join(bad))
        raise SystemExit(1)
    if not cuda:
        print("no GPU: the CUDA columns were not measured; run bash bench/gpu_check.sh on a GPU")


if __name__ == "__main__":
    main()
