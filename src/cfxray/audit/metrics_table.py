"""Recorded metrics as rows of value and confidence interval, for model cards and `reproduce`.

`cfxray evaluate` writes `<group>/<name>` with the interval as sibling keys
(`classifier/auc`, `classifier/auc_ci_low`, `classifier/auc_ci_high`); the training runs'
records nest their numbers (`test.n2p.validity` in the CycleGAN's), which become dotted names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

_CI = ("_ci_low", "_ci_high")
# Groups of `metrics.json` (and of the CycleGAN's nested summary) that measure counterfactuals.
COUNTERFACTUAL_GROUPS = ("n2p", "p2n")


@dataclass
class MetricRow:
    name: str
    value: float | None
    low: float | None = None
    high: float | None = None

    @property
    def is_counterfactual(self) -> bool:
        return any(part in COUNTERFACTUAL_GROUPS for part in self.name.replace(".", "/").split("/"))

    def formatted(self) -> tuple[str, str]:
        value = _fmt(self.value)
        ci = f"[{_fmt(self.low)}, {_fmt(self.high)}]" if self.low is not None else ""
        return value, ci


def _fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def _number(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return float(x)


def metric_rows(metrics: dict[str, Any], prefix: str = "") -> list[MetricRow]:
    """Every numeric metric with its interval when one is recorded."""
    rows: list[MetricRow] = []
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows.extend(metric_rows(value, f"{name}."))
            continue
        number = _number(value)
        if number is None or key.endswith(_CI):  # null (NaN when measured), text, a flag
            continue
        low, high = (metrics.get(f"{key}{suffix}") for suffix in _CI)
        rows.append(MetricRow(name, number, _number(low), _number(high)))
    return rows
