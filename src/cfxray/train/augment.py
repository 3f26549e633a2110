"""Radiograph augmentation for the classifier, batched on the training device.

Its random numbers come from a dedicated CPU generator in the training process, never from
worker processes, so the stream is one small state that checkpoints capture: that is what
lets a resumed run see exactly the augmented batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as nnf


@dataclass(frozen=True)
class AugmentConfig:
    """Small geometry and exposure changes, no flip by default (the heart is on the left, and
    a flipped chest is not a plausible radiograph)."""

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
