"""The plain model inside the wrappers training may put around it.

State dicts are saved from, and submodules reached through, the model itself: a
DistributedDataParallel wrapper prefixes every key with `module.` and a `torch.compile`d
module with `_orig_mod.`, and a checkpoint written through either would not load into a
plain model.
"""

from __future__ import annotations

from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """`model` without its DistributedDataParallel and `torch.compile` wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model
