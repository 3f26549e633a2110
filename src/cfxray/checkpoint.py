"""Atomic, complete, verifiable checkpoints, so a killed run resumes in the same state.

A checkpoint holds everything that influences the rest of the run: model and optimiser
states, schedulers, any extra state (image pools), every RNG and the step counter. It is
written to a temporary file and renamed, so a kill mid-write never leaves a torn file; a
temporary file such a kill leaves behind is removed by the next run (`remove_stale_temporaries`).
Every file written here carries a hash of its content, checked on load: torch reads a file
whose tensor bytes were overwritten without complaint, and a run resumed from it would train
on garbage. The models load their files through this module and the trainers write them, so
it sits below both.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cfxray.errors import UserError

CONTENT_HASH = "content_sha256"
_TEMPORARY = re.compile(r"^\..+\.tmp-(\d+)$")


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


def _feed(digest: Any, value: Any) -> None:
    """Hash a checkpoint's content: structure, every tensor's bytes, every plain value."""
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"T{t.dtype}{tuple(value.shape)};".encode())
        digest.update(t.view(torch.uint8).numpy().data)
    elif isinstance(value, np.ndarray):
        digest.update(f"A{value.dtype}{value.shape};".encode())
        digest.update(np.ascontiguousarray(value).data)
    elif isinstance(value, dict):
        digest.update(f"D{len(value)};".encode())
        for key, item in value.items():
            _feed(digest, key)
            _feed(digest, item)
    elif isinstance(value, list | tuple):
        digest.update(f"L{len(value)};".encode())
        for item in value:
            _feed(digest, item)
    else:  # numbers, strings, None, bytes, numpy scalars: repr is exact and stable
        digest.update(f"V{type(value).__name__}:{value!r};".encode())


def content_hash(obj: dict[str, Any]) -> str:
    digest = hashlib.sha256()
    _feed(digest, {k: v for k, v in obj.items() if k != CONTENT_HASH})
    return digest.hexdigest()


def save_atomic(obj: dict[str, Any], path: str | Path) -> None:
    """Write `obj` with its content hash to a temporary file, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save({**{k: v for k, v in obj.items() if k != CONTENT_HASH},
                CONTENT_HASH: content_hash(obj)}, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The saved object, its content hash checked (files written elsewhere have none)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a torn or foreign file: say which, not a pickle traceback
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot read checkpoint {path}: {reason}") from exc
    if isinstance(obj, dict) and CONTENT_HASH in obj:
        stored = obj.pop(CONTENT_HASH)
        if content_hash(obj) != stored:
            raise UserError(f"checkpoint {path} is corrupt: its content does not match the hash "
                            "written with it; restore it from a copy or start a new output folder")
    return obj


def load_state_checked(model: torch.nn.Module, state: dict[str, Any], path: str | Path) -> None:
    """Load weights saved next to a config, refusing in one line weights the config does not
    describe (a file whose stored config was edited after it was written)."""
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, AttributeError) as exc:
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else (lines[0] if lines else type(exc).__name__)
        raise UserError(f"{path}: the stored config does not match the stored weights "
                        f"({detail[:200]})") from exc


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the `.NAME.tmp-PID` files `save_atomic` leaves when its process is killed
    mid-write (only those of processes no longer running); returns what was removed."""
    folder = Path(folder)
    removed = []
    for path in sorted(folder.glob(".*.tmp-*")) if folder.is_dir() else []:
        match = _TEMPORARY.match(path.name)
        if match and path.is_file() and not _running(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def check_config_matches(saved: dict[str, Any], current: dict[str, Any], what: str) -> None:
    """Refuse to resume a run whose model configuration differs from the saved one."""
    diffs = {k: (saved.get(k), current.get(k)) for k in set(saved) | set(current)
             if saved.get(k) != current.get(k)}
    if diffs:
        listed = ", ".join(f"{k}: checkpoint={a!r} now={b!r}" for k, (a, b) in sorted(diffs.items()))
        raise UserError(f"{what} was saved with another configuration ({listed}); "
                        "start a new output folder or use the same parameters")
