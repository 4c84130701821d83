"""Train several runs, one after another, in one process (or one process group of ``torchrun``).

The per-family fault and data-parallel tests (``test_faults.py``, ``test_distributed.py``) need a
short training run of every registered family, several times over. Started one process per run,
the interpreter, torch and (under ``torchrun``) the process group start dozens of times and cost
more than the training. This driver starts once and runs ``genlab train`` for each entry of a JSON
plan in turn, exactly as the command line would, and writes one result file per run and rank, so
a failure of one family is reported as that family's failure.

    python tests/train_many.py PLAN.json
    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/train_many.py PLAN.json

PLAN.json: ``{"runs": [{"name", "config", "args", "out"}], "results": DIR}``. A run whose result
file exists is skipped; a run whose folder holds a checkpoint is resumed (``--resume``), so the
driver can be killed with SIGKILL at any moment and started again to finish the plan (the name of
the run in progress is in ``DIR/current``). The process group is joined once and left at the end;
the threads of this process still alive after that are listed in ``DIR/threads.rankR.json`` (Linux),
so a test can check that leaving the group ended its backend's threads.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
import traceback
from pathlib import Path


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(plan_path: str) -> int:
    from genlab import checkpoint as ckpt
    from genlab import cli
    from genlab.train import distributed

    plan = json.loads(Path(plan_path).read_text())
    results = Path(plan["results"])
    results.mkdir(parents=True, exist_ok=True)
    info = distributed.from_env()
    teardown, distributed.teardown = distributed.teardown, lambda info: None  # once, at the end
    os.environ["GENLAB_DEBUG"] = "1"  # an internal error raises here, and its traceback is kept
    failed = 0
    for run in plan["runs"]:
        done = results / f"{run['name']}.rank{info.rank}.json"
        if done.exists():
            continue
        out = Path(run["out"])
        resume = bool(ckpt.list_checkpoints(out / "checkpoints"))
        if not resume and out.exists() and info.is_main:  # killed before its first checkpoint
            shutil.rmtree(out)
        if distributed.dist.is_initialized():
            distributed.barrier(info)  # the folder is cleared before any rank starts
        if info.is_main:
            _write(results / "current", run["name"])
        argv = ["train", run["config"], *run["args"], "--out", str(out), "--no-eval"]
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                rc = cli.main(argv + (["--resume"] if resume else []))
        except BaseException:  # noqa: BLE001 - reported as this run's failure
            rc, err = 1, io.StringIO(err.getvalue() + traceback.format_exc())
        failed += rc != 0
        _write(done, json.dumps({"rc": rc, "stderr": err.getvalue()[-4000:], "resumed": resume}))
    teardown(info)
    tasks = Path("/proc/self/task")
    if tasks.is_dir():  # the native threads left (names as the kernel has them)
        names = sorted((t / "comm").read_text().strip() for t in tasks.iterdir())
        _write(results / f"threads.rank{info.rank}.json", json.dumps(names))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
