"""Leave a gloo process group the way ``genlab train`` does (``genlab.train.distributed.setup``,
then ``teardown``) with a collective still in flight, then list the native threads left.

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/leave_group.py OUT

Rank 1 starts an all-reduce whose completion runs Python (a future's callback, in a gloo worker
thread) and leaves at once; rank 0 joins the all-reduce a second later. Before that, torch modules
that bind the default group when they are imported (``group=group.WORLD`` defaults) are imported
after the group exists: ``torch.distributed.nn``, which building a ``torch.optim`` optimizer
imports (through ``torch._dynamo``), and ``ZeroRedundancyOptimizer``'s module, as a model might. Unless teardown really ends the group, its threads live
on into interpreter shutdown, the callback's thread needs the GIL there, Python ends that thread
with ``pthread_exit`` inside C++ and the process aborts ("terminate called without an active
exception"). Each rank writes the names of its threads after teardown to ``OUT/threads.rankR.json``.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from genlab.train import distributed


def main(out: str) -> int:
    info = distributed.from_env()
    distributed.setup(info, torch.device("cpu"))
    for name in ("torch.distributed.nn", "torch.distributed.optim.zero_redundancy_optimizer"):
        importlib.import_module(name)  # each binds the group now, unless imported already

    x = torch.ones(1000)
    if info.rank == 0:
        time.sleep(1.0)
    work = dist.all_reduce(x, async_op=True)
    work.get_future().then(lambda fut: fut.value())  # Python, run by the thread that completes it
    distributed.teardown(info)  # rank 1: the all-reduce has not finished yet
    del work, x
    names = sorted(p.read_text().strip() for p in Path("/proc/self/task").glob("*/comm"))
    Path(out, f"threads.rank{info.rank}.json").write_text(json.dumps(names))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
