"""How every trainer is fed: its images on the training device, one index gather per step.

A training split is small next to a training device's memory, so it lives there as uint8 (a
quarter of the float bytes) and a step's batch is one index gather plus a conversion to
[0, 1] floats, on the device: no loader processes, no host round trip, no host sync in the
hot loop. The order is a seeded permutation per epoch, so a run resumed at step i of an
epoch draws exactly the batches the uninterrupted run drew from step i on. Under torchrun,
rank r takes the r-th slice of every global batch, so N processes together see the batches
one process would.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from cfxray.data import tensors
from cfxray.train.distributed import DistContext


def device_images(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 [B, H, W] -> float [B, 1, H, W] in [0, 1] on the device (channels_last on CUDA)."""
    images = tensors.unit_images(images.to(device, non_blocking=True))
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    return images


def epoch_order(count: int, length: int, seed: int) -> torch.Tensor:
    """`length` indices into `count` images: seeded permutations, concatenated. A set smaller
    than an epoch's draw wraps around, so no image of a larger set is wasted."""
    gen = torch.Generator().manual_seed(seed)
    reps = math.ceil(length / count)
    return torch.cat([torch.randperm(count, generator=gen) for _ in range(reps)])[:length]


class DeviceBatches:
    """One stream of training batches: `steps` global batches of `batch_size` per epoch."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, steps: int, batch_size: int,
                 ctx: DistContext, device: torch.device, seed: Callable[[int], int]) -> None:
        if not len(images):
            raise ValueError("a batch stream needs at least one image")
        self.images, self.labels = images.to(device), labels.to(device)
        self.steps, self.batch_size = steps, batch_size
        self.rank_batch = batch_size // ctx.world_size
        self.ctx, self.device, self.seed = ctx, device, seed
        self.order = torch.empty(0, dtype=torch.long)

    def set_epoch(self, epoch: int) -> None:
        """This rank's indices for every step of `epoch`, [steps, rank_batch], on the device."""
        order = epoch_order(len(self.images), self.steps * self.batch_size, self.seed(epoch))
        shards = order.view(self.steps, self.ctx.world_size, self.rank_batch)
        self.order = shards[:, self.ctx.rank].to(self.device)

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's (float images [b, 1, H, W], labels [b]) of one step."""
        index = self.order[step]
        return device_images(self.images[index], self.device), self.labels[index]
