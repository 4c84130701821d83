"""No family's training step waits for the device: every call that would copy a device value to
the host (``.item()``, ``bool()``, ``int()``, ``float()``, ``.tolist()``, ``.numpy()``, a tensor
used as a Python index) is counted during a training step of each family's tiny recipe.

On a GPU each such call stalls the host until the device has caught up, so a step with one runs
at the speed of its slowest kernel launch. The count is taken on the CPU by intercepting the
calls themselves (a ``TorchFunctionMode``), so the test needs no GPU and fails on the CPU the
moment a family adds one; with a GPU, ``torch.cuda.set_sync_debug_mode("error")`` checks the
same steps on CUDA (``test_gpu.py``). Steps that log, validate or checkpoint read values on
purpose and are not counted."""

from __future__ import annotations

import collections

import pytest
import torch
from families import RECIPES, stage1_run  # noqa: F401  (stage-1 runs are trained on first use)
from torch.overrides import TorchFunctionMode

import genlab
from genlab.train.trainer import Trainer

SYNCS = {
    torch.Tensor.item: "item()",
    torch.Tensor.__bool__: "bool()",
    torch.Tensor.__int__: "int()",
    torch.Tensor.__float__: "float()",
    torch.Tensor.__index__: "index",
    torch.Tensor.tolist: "tolist()",
    torch.Tensor.numpy: "numpy()",
}


# The syncs this test found when it was written, not yet removed (issue 31), by family: a value
# read on the host inside the step, as ``file:function``. The test fails on any sync not listed
# here and on a listed one that is gone, so the list only shrinks. FFJORD's adaptive solver
# (torchdiffeq's dopri5) chooses its step sizes on the host by design.
KNOWN: dict[str, set[str]] = {
    "ffjord": {"models/flows/cnf.py:_integrate"},
}


class CountSyncs(TorchFunctionMode):
    """Counts the calls that copy a tensor's value to the host, with where they came from."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: collections.Counter = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = SYNCS.get(func)
        if name is not None:
            import traceback

            frame = next(
                (f for f in reversed(traceback.extract_stack()[:-1]) if "/genlab/" in f.filename),
                None,
            )
            where = f"{frame.filename.split('/genlab/')[-1]}:{frame.name}" if frame else "?"
            self.calls[f"{name} at {where}"] += 1
        return func(*args, **(kwargs or {}))


def tiny_trainer(name: str, tmp_path) -> Trainer:
    tiny = RECIPES[name]
    cfg = genlab.load_config(tiny.path, tiny.args("trainer.log_every=1000",
                                                  "trainer.checkpoint_every=1000"))  # fmt: skip
    data = genlab.load_data(cfg)
    model = genlab.build_model(cfg, data)
    return Trainer(model, data, cfg, tmp_path / name)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_a_training_step_never_copies_a_device_value_to_the_host(name, tmp_path):
    tr = tiny_trainer(name, tmp_path)
    tr.model.train()
    try:
        for _ in range(3):  # past any first-step work (lazy initialisation, warm-up)
            tr.train_step()
        with CountSyncs() as counter:
            for _ in range(2):
                tr.train_step()
    finally:
        tr.close()
    found = {site.split(" at ")[1] for site in counter.calls}
    new = found - KNOWN.get(name, set())
    assert not new, f"{name}: host syncs in a training step: {dict(counter.calls)}"
    gone = KNOWN.get(name, set()) - found
    assert not gone, f"{name}: {gone} no longer syncs: remove it from KNOWN"
