"""What a user waits for at `genlab eval` of a text diffusion run, and what it shows meanwhile.

For each text diffusion recipe (MDLM, BD3-LM, SEDD on Tiny Shakespeare) at its full size (the
recipe's own width, depth, context and ELBO draws), the script trains a few steps with --no-eval
(the weights do not change the cost of the bound), then times `genlab eval RUN --nll-n N` and
`genlab eval RUN` (the default: the whole test split) as a subprocess with its stderr sent to a
file (not a terminal), and records the wall time and the progress lines it printed (the stage
lines and the likelihood's done/total with an ETA).

Run:  PYTHONPATH=src .venv/bin/python bench/cli_eval.py [--quick] [--nll-n 20000]
Writes bench/results/cli_eval.json (--quick: to $TMPDIR, with 200 characters and no default run).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import machine_info, write_results

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "cli_eval.json"
RECIPES = ["mdlm-shakespeare", "bd3lm-shakespeare", "sedd-shakespeare"]
GENLAB = [sys.executable, "-m", "genlab"]


def timed(args: list[str], log: Path) -> dict:
    """Run ``genlab ARGS`` with stderr to ``log`` (not a terminal); its time and what it printed."""
    t0 = time.perf_counter()
    with open(log, "w") as err:
        proc = subprocess.run(GENLAB + args, stdout=subprocess.PIPE, stderr=err, text=True)
    seconds = time.perf_counter() - t0
    lines = log.read_text().splitlines()
    if proc.returncode != 0:
        raise SystemExit(f"genlab {' '.join(args)} exited {proc.returncode}:\n" + "\n".join(lines))
    return {
        "command": "genlab " + " ".join(args),
        "seconds": seconds,
        "stderr_lines": lines,
        "progress_lines": sum("rows, ETA" in ln for ln in lines),
        "nll_line": next((ln.strip() for ln in proc.stdout.splitlines() if "bits/char" in ln), ""),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a smoke test: tiny --nll-n, no default")
    ap.add_argument("--nll-n", type=int, default=20_000, help="characters for the bounded run")
    args = ap.parse_args()
    t_start = time.perf_counter()
    out = Path(tempfile.gettempdir()) / "cli_eval.json" if args.quick else RESULTS
    nll_n = 200 if args.quick else args.nll_n
    record: dict = {
        "machine": {**machine_info(), "loadavg_before": list(os.getloadavg())},
        "nll_n": nll_n,
        "bar": "genlab eval of a text diffusion run shows progress and finishes in under 2 minutes "
        "with --nll-n small (issue: the CLI contract)",
        "rows": [],
    }
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        for name in RECIPES:
            run = work / name
            train = ["train", str(ROOT / "configs" / f"{name}.yaml"), "--out", str(run),
                     "--no-eval", "trainer.steps=5", "trainer.progress=false",
                     "trainer.tensorboard=false"]  # fmt: skip
            subprocess.run(GENLAB + train, check=True, capture_output=True)
            row = {"recipe": name, "bounded": timed(["eval", str(run), "--nll-n", str(nll_n)],
                                                    work / "bounded.log")}  # fmt: skip
            if not args.quick:
                row["default"] = timed(["eval", str(run)], work / "default.log")
            record["rows"].append(row)
            for what in ("bounded", "default"):
                if what in row:
                    r = row[what]
                    print(f"{name:<20} {what:<8} {r['seconds']:7.1f} s  "
                          f"{r['progress_lines']} progress line(s)  {r['nll_line']}")  # fmt: skip
    write_results(record, out, t_start)


if __name__ == "__main__":
    main()
