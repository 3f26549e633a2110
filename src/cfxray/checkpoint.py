"""Atomic, complete training checkpoints so a killed run resumes in the same state.

A checkpoint holds everything that influences the rest of the run: model and optimiser
states, schedulers, any extra state (image pools), every RNG and the step counter. It is
written to a temporary file and renamed, so a kill mid-write never leaves a torn file.
The models load their files through it and the trainers write them, so it sits below both.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cfxray.errors import UserError


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def save_atomic(obj: Any, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a torn or foreign file: say which, not a pickle traceback
        raise UserError(f"cannot read checkpoint {path}: {exc}") from exc


def check_config_matches(saved: dict[str, Any], current: dict[str, Any], what: str) -> None:
    """Refuse to resume a run whose model configuration differs from the saved one."""
    diffs = {k: (saved.get(k), current.get(k)) for k in set(saved) | set(current)
             if saved.get(k) != current.get(k)}
    if diffs:
        listed = ", ".join(f"{k}: checkpoint={a!r} now={b!r}" for k, (a, b) in sorted(diffs.items()))
        raise UserError(f"{what} was saved with another configuration ({listed}); "
                        "start a new output folder or use the same parameters")
