"""Data-parallel training across processes, launched by ``torchrun``.

    torchrun --nproc_per_node=4 -m genlab train configs/flow-matching-moons.yaml --out runs/ddp

Each process draws the same *global* batch (the data order and the per-step randomness are seeded
the same way everywhere), prepares it (noise, times, OT pairing) and keeps its own contiguous
slice; gradients are averaged with one all-reduce over a flat buffer per step. So the global batch
is ``trainer.batch_size`` whatever the number of processes, and N processes follow the same
trajectory as one (to float rounding of the gradient sum). Rank 0 alone logs, checkpoints and
evaluates; a checkpoint carries no trace of the world size, so it resumes on any number of
processes. The backend is NCCL on CUDA and gloo otherwise.

Multi-node: run the same ``torchrun`` on every node with ``--nnodes=M --node_rank=i
--rdzv_backend=c10d --rdzv_endpoint=HOST:PORT`` (HOST: the first node).
"""

from __future__ import annotations

import gc
import inspect
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from genlab.errors import GenlabError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def from_env() -> DistInfo:
    """What ``torchrun`` put in the environment (a single process when it did not)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def setup(info: DistInfo, device: torch.device) -> torch.device:
    """Join the process group (once) and return this rank's device (``cuda:LOCAL_RANK`` on GPUs)."""
    if not info.enabled:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        _import_before_joining()
        dist.init_process_group(backend)
    if dist.get_world_size() != info.world:
        raise GenlabError("WORLD_SIZE does not match the process group")
    return device


def average_gradients(
    params: list[torch.nn.Parameter], world: int, loss: torch.Tensor | None = None
) -> torch.Tensor | None:
    """Average ``.grad`` across ranks with one all-reduce of a flat buffer; when ``loss`` (a scalar)
    is given it rides along and its mean over ranks is returned, so every rank sees the same loss
    (and takes the same decision when it is not finite)."""
    grads = [p.grad for p in params if p.grad is not None]
    parts = [g.reshape(-1) for g in grads] + (
        [loss.reshape(1).to(grads[0].dtype)] if loss is not None else []
    )
    flat = torch.cat(parts)
    dist.all_reduce(flat)
    flat.div_(world)
    chunks = flat.split([g.numel() for g in grads] + ([1] if loss is not None else []))
    torch._foreach_copy_(grads, [c.view_as(g) for c, g in zip(chunks, grads)])
    return chunks[-1].reshape(()) if loss is not None else None


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def teardown(info: DistInfo) -> None:
    """Leave the process group and end its backend (with gloo: its worker and I/O threads) here,
    while the interpreter is fully alive, never at interpreter exit (see
    :func:`_import_before_joining`)."""
    if info.enabled and dist.is_initialized():
        group = dist.group.WORLD
        dist.destroy_process_group()
        _drop_stale_references(group)


# -- a process group that outlives destroy_process_group -----------------------------------------
#
# A gloo process group owns C++ threads (two ``pt_gloo_runloop`` workers and a ``gloo_tcp_loop``);
# they are joined when the last reference to the group goes, and only then: ``destroy_process_group``
# (and gloo's ``shutdown``/``abort``) merely forget it. Some torch modules bind the default group
# when they are imported (``def all_reduce(tensor, op=..., group=group.WORLD)`` in
# ``torch.distributed.nn.functional``, reached through ``torch._dynamo``, which building any
# ``torch.optim`` optimizer imports). Imported after ``init_process_group``, those defaults keep
# the group, and its threads, alive until the interpreter's own shutdown, where the group is freed
# by the final garbage collection. A gloo thread that needs the GIL from then on (to release a
# tensor owned by Python, or to run a future's callback) is ended by Python with ``pthread_exit``;
# the forced unwind through a C++ destructor calls ``std::terminate``: "terminate called without
# an active exception", SIGABRT, in a run that had finished its work (seen as a rare abort of rank
# 1 in tests/test_distributed.py). So the modules are imported before the group exists (they bind
# None, "the default group") and teardown drops whatever import-time reference is left.


def _import_before_joining() -> None:
    """Import the torch modules that would bind the default group at import time, before the
    group exists (``torch._dynamo`` pulls in ``torch.distributed.nn``; the optimizer would import it
    anyway, a moment later)."""
    import torch._dynamo  # noqa: F401


def _drop_stale_references(group: object) -> None:
    """Replace ``group`` in the default arguments of the functions (and methods) of the loaded
    ``torch.distributed`` modules by None (the default group), so that no import-time reference
    keeps a destroyed group and its threads alive. Nothing to do when the modules were imported
    before the group existed; a backstop for one imported later (by a model, say)."""
    if group is None:
        return

    def scrub(fn: object) -> None:
        if not inspect.isfunction(fn):
            return
        if fn.__defaults__ and any(d is group for d in fn.__defaults__):
            fn.__defaults__ = tuple(None if d is group else d for d in fn.__defaults__)
        if fn.__kwdefaults__ and any(d is group for d in fn.__kwdefaults__.values()):
            fn.__kwdefaults__ = {k: None if d is group else d for k, d in fn.__kwdefaults__.items()}

    for name, module in list(sys.modules.items()):
        if not name.startswith("torch.distributed") or module is None:
            continue
        for value in list(vars(module).values()):
            if inspect.isclass(value) and value.__module__ == name:
                for member in list(vars(value).values()):
                    scrub(getattr(member, "__func__", member))  # plain, static and class methods
            else:
                scrub(value)
    gc.collect()  # anything else that held it in a reference cycle
