"""Read `params.yaml` sections so CLI defaults, DVC stages and KFP components share one source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

DEFAULT_PARAMS = Path("params.yaml")


def load_params(path: str | Path = DEFAULT_PARAMS) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        return {}
    with path.open() as f:
        return yaml.safe_load(f) or {}


def section(name: str, path: str | Path = DEFAULT_PARAMS) -> dict[str, Any]:
    """One stage's parameters; empty when the file or section is absent (CLI defaults apply)."""
    return dict(load_params(path).get(name) or {})
