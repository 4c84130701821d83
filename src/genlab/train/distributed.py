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

import os
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
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
