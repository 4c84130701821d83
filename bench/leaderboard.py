"""`genlab leaderboard` as a user runs it, recorded: every family that fits the data on one CPU budget.

Runs ``genlab.leaderboard.run(DATA, BUDGET, OUT)`` (the command `genlab leaderboard --data DATA
--budget-minutes BUDGET --out OUT`), then records, beside the machine, the plan (each family's
recipe, planned steps, status, seconds; the skipped ones with their reasons), each ranked run's
figures from its own ``metrics.json`` (the ranking metric with its spread and real-data floor, the
held-out NLL with its kind and standard error, the split they were measured on, the sample and
example counts) and the wall clock of the whole board. The board's own ``leaderboard.md`` is
copied beside the JSON.

Run:  PYTHONPATH=src .venv/bin/python bench/leaderboard.py --data digits --budget-minutes 30
Writes bench/results/leaderboard-DATA-BUDGETmin.json and .md (--quick: a 0.5-minute board of two
families, to $TMPDIR).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _machine import machine_info, write_results

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", default="digits")
    ap.add_argument("--budget-minutes", type=float, default=30.0)
    ap.add_argument("--families", help="comma-separated (default: every one that fits)")
    ap.add_argument("--work", help="the board's folder (default: a temporary one)")
    ap.add_argument("--quick", action="store_true", help="a smoke test: 0.5 min, vae and made")
    args = ap.parse_args()
    from genlab import leaderboard

    t_start = time.perf_counter()
    budget = 0.5 if args.quick else args.budget_minutes
    families = "vae,made" if args.quick else args.families
    stem = f"leaderboard-{Path(args.data).stem}-{budget:g}min"
    results = Path(tempfile.gettempdir()) if args.quick else ROOT / "bench" / "results"
    record: dict = {
        "machine": {**machine_info(), "loadavg_before": list(os.getloadavg())},
        "command": f"genlab leaderboard --data {args.data} --budget-minutes {budget:g}"
        + (f" --families {families}" if families else ""),
    }
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.work) if args.work else Path(tmp) / "board"
        os.chdir(ROOT)  # the recipes in configs/
        t0 = time.perf_counter()
        leaderboard.run(args.data, budget, out, families=families.split(",") if families else None)
        record["wall_seconds"] = time.perf_counter() - t0
        plan = json.loads((out / "leaderboard.json").read_text())
        record["plan"] = plan
        record["rows"] = [_row(out / "runs" / e["family"], e) for e in plan["entries"]]
        shutil.copyfile(out / "leaderboard.md", results / f"{stem}.md")
    for r in sorted(record["rows"], key=lambda r: (r["rank_value"] is None, r["rank_value"])):
        print(f"{r['family']:<16} {r['rank_metric']} {r['rank_value']}  nll {r['nll_nats']} "
              f"({r['nll_kind']})  split {r['split']}  {r['seconds'] / 60:.1f} min")  # fmt: skip
    write_results(record, results / f"{stem}.json", t_start)


def _row(run: Path, entry: dict) -> dict:
    from genlab.leaderboard import RANK_BY

    path = run / "metrics.json"
    report = json.loads(path.read_text()) if path.is_file() else {}
    kind = (report.get("data") or {}).get("kind", "")
    metric = RANK_BY.get(kind, "")
    m = (report.get("metrics") or {}).get(metric) or {}
    nll = report.get("nll") or {}
    return {
        "family": entry["family"], "config": entry["config"], "steps": entry["steps"],
        "seconds": entry["seconds"], "status": entry["status"], "split": report.get("split"),
        "rank_metric": metric, "rank_value": m.get("value"), "rank_std": m.get("std"),
        "rank_floor": m.get("floor"), "n": report.get("n"), "seeds": report.get("seeds"),
        "nll_nats": nll.get("nats"), "nll_stderr": nll.get("stderr"), "nll_kind": nll.get("kind"),
        "nll_n": nll.get("n"), "nll_note": nll.get("note"),
    }  # fmt: skip


if __name__ == "__main__":
    main()
