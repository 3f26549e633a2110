"""One training code path for one process and for `torchrun --nproc_per_node=N`.

`distributed_session` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK), starts the
process group (NCCL on GPUs, gloo on CPU) and picks the device; in a plain process every
helper here is a no-op, so trainers never branch on "am I distributed". Only rank 0 writes
files (`ctx.is_main`); checkpoints gather every rank's RNG state so a resumed multi-process
run continues each rank's random stream.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from cfxray.device import select_device


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def env_context() -> DistContext:
    """The process's place in a torchrun job; rank 0 of 1 when not launched by torchrun."""
    return DistContext(rank=int(os.environ.get("RANK", 0)),
                       world_size=int(os.environ.get("WORLD_SIZE", 1)),
                       local_rank=int(os.environ.get("LOCAL_RANK", 0)))


@contextmanager
def distributed_session(device_preference: str = "auto") -> Iterator[tuple[DistContext, torch.device]]:
    """Join the torchrun process group for the duration of a training run, then leave it."""
    ctx = env_context()
    device = select_device(device_preference, ctx.local_rank)
    started = ctx.is_distributed and not dist.is_initialized()
    if started:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        yield ctx, device
    finally:
        if started:
            dist.destroy_process_group()


def wrap_model(model: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """DistributedDataParallel around the model when there are several processes."""
    if not ctx.is_distributed:
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum a metric tensor over ranks in place (identity in a single process)."""
    if ctx.is_distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank (`[obj]` in a single process)."""
    if not ctx.is_distributed:
        return [obj]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's `obj` on every rank, e.g. a decision only rank 0 can make."""
    if not ctx.is_distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(ctx: DistContext) -> None:
    if ctx.is_distributed:
        dist.barrier()
