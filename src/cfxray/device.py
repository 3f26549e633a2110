"""Which device a step runs on: one rule for training, evaluation and every rank of torchrun."""

from __future__ import annotations

import torch

from cfxray.errors import UserError


def select_device(preference: str, local_rank: int = 0) -> torch.device:
    """`auto` takes this process's GPU when there is one, else the CPU; `cuda` (or `cuda:N`)
    without a GPU is a user error rather than a silent, many times slower CPU run."""
    kind, _, index = preference.partition(":")
    if kind not in ("auto", "cpu", "cuda") or (index and (kind != "cuda" or not index.isdigit())):
        raise UserError(f"unknown device {preference!r}; choose auto, cpu, cuda or cuda:N")
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {preference!r} was asked for but no CUDA GPU is visible")
    if kind == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    device = torch.device("cuda", int(index) if index else local_rank % torch.cuda.device_count())
    torch.cuda.set_device(device)
    return device
