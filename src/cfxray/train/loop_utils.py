"""Pieces every training loop shares: fast device settings, batched loading, augmentation.

Data stays uint8 in memory and crosses to the device as uint8 (a quarter of the bytes);
conversion to [0, 1] floats and augmentation happen on the device, batched. Augmentation
draws its random numbers from a dedicated CPU generator in the training process, never in
DataLoader workers, so its stream is one small state that checkpoints capture: that is what
lets a resumed run see exactly the augmented batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as nnf
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset

from cfxray.data.tensors import SplitData, unit_images
from cfxray.train.distributed import DistContext, ShardSampler


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (no loss scaling needed); full precision on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Move to the device; on CUDA use channels_last, which the tensor cores prefer."""
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    return model


def to_device_images(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 [B, H, W] batch -> float [B, 1, H, W] in [0, 1] on the device."""
    images = unit_images(images.to(device, non_blocking=True))
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    return images


class _IndexedBatches(Dataset):
    """Whole batches by index list: one tensor gather per batch, not a per-image collate."""

    def __init__(self, data: SplitData) -> None:
        self.images = data.images
        self.labels = data.labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]


def batch_loader(data: SplitData, sampler: ShardSampler, batch_size: int, device: torch.device,
                 num_workers: int = 0, drop_last: bool = True) -> DataLoader:
    """A DataLoader yielding (uint8 images [B, H, W], labels [B]) for this rank's shard."""
    batches = BatchSampler(sampler, batch_size, drop_last=drop_last)
    return DataLoader(_IndexedBatches(data), batch_size=None, sampler=batches,
                      num_workers=num_workers, pin_memory=device.type == "cuda",
                      persistent_workers=num_workers > 0,
                      # Workers draw no random numbers; the generator only fixes their seeds.
                      generator=torch.Generator().manual_seed(sampler.seed))


def eval_loader(data: SplitData, batch_size: int, device: torch.device,
                num_workers: int = 0) -> DataLoader:
    """Every image once, in order (evaluation on each rank sees the whole split)."""
    sampler = ShardSampler(len(data), DistContext(), seed=0, shuffle=False)
    return batch_loader(data, sampler, batch_size, device, num_workers, drop_last=False)


def steps_per_epoch(n_images: int, batch_size: int, ctx: DistContext) -> int:
    """Optimiser steps per epoch for a per-rank batch, the same count on every rank."""
    return max(1, math.ceil(n_images / ctx.world_size) // batch_size)


@dataclass(frozen=True)
class AugmentConfig:
    """Radiograph augmentation: small geometry and exposure changes, no flip by default
    (the heart is on the left, and a flipped chest is not a plausible radiograph)."""

    rotate_deg: float = 5.0
    translate: float = 0.04  # fraction of the image width/height
    scale: float = 0.05  # zoom in [1 - scale, 1 + scale]
    brightness: float = 0.05  # additive, in [0, 1] intensity units
    contrast: float = 0.1  # multiplicative around the image mean
    hflip: bool = False


def augment(images: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Random affine + brightness/contrast on a [B, 1, H, W] batch in [0, 1].

    Always draws the same count of numbers per image, whatever the settings, so turning one
    augmentation off does not shift the stream the others see.
    """
    b = images.shape[0]
    u = torch.rand(b, 7, generator=gen) * 2 - 1  # uniform in [-1, 1], on the CPU
    angle = u[:, 0] * math.radians(cfg.rotate_deg)
    zoom = 1 + u[:, 1] * cfg.scale
    flip = torch.where((u[:, 2] > 0) & cfg.hflip, -1.0, 1.0)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    shift = u[:, 3:5] * cfg.translate * 2  # affine_grid coordinates span [-1, 1]
    theta = torch.stack([torch.stack([cos * flip, -sin, shift[:, 0]], 1),
                         torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1)
    brightness = u[:, 5] * cfg.brightness
    contrast = 1 + u[:, 6] * cfg.contrast
    theta = theta.to(images.device, non_blocking=True)
    grid = nnf.affine_grid(theta, list(images.shape), align_corners=False)
    out = nnf.grid_sample(images, grid, mode="bilinear", padding_mode="border",
                          align_corners=False)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    contrast = contrast.to(images.device).view(b, 1, 1, 1)
    brightness = brightness.to(images.device).view(b, 1, 1, 1)
    return ((out - mean) * contrast + mean + brightness).clamp_(0.0, 1.0)


class WeightEMA:
    """An exponential moving average of a model's weights and buffers, updated on the device
    without host syncs. Small-data training wobbles from step to step; the average is the
    steadier model to validate and to keep."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        self.model.requires_grad_(False)

    def _tensors(self, model: nn.Module) -> list[torch.Tensor]:
        return [*model.parameters(), *model.buffers()]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        pairs = list(zip(self._tensors(self.model), self._tensors(model), strict=True))
        floats = [(a, b.detach()) for a, b in pairs if a.is_floating_point()]
        torch._foreach_lerp_([a for a, _ in floats], [b for _, b in floats], 1.0 - self.decay)
        for averaged, current in pairs:
            if not averaged.is_floating_point():
                averaged.copy_(current)  # counters such as BatchNorm's num_batches_tracked
