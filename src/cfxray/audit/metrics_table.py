"""Read an evaluation's metrics, whatever their nesting, as rows of value and confidence interval.

`metrics.json` may hold a metric with its interval as sibling keys (`auc`, `auc_ci_low`,
`auc_ci_high`), as a dict (`{"value"|"estimate"|"mean": .., "low"|"ci_low": .., "high": ..}`)
or as a `[low, high]` list under `<metric>_ci`. Model cards and reproducibility reports need
one shape, so all of these become `MetricRow`s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

_VALUE_KEYS = ("value", "estimate", "point", "mean", "mean_value")
_LOW_KEYS = ("low", "ci_low", "lower", "lower_bound", "lo")
_HIGH_KEYS = ("high", "ci_high", "upper", "upper_bound", "hi")
_LOW_SUFFIXES = ("_ci_low", "_ci_lower", "_low", "_lower")
_HIGH_SUFFIXES = ("_ci_high", "_ci_upper", "_high", "_upper")
# Metric groups (`<group>/<name>`, as `cfxray evaluate` writes them) and, for other layouts,
# words that say a number measures the counterfactuals rather than a classifier.
COUNTERFACTUAL_GROUPS = ("n2p", "p2n", "counterfactual", "cyclegan")
CLASSIFIER_GROUPS = ("classifier", "oracle", "gate")
COUNTERFACTUAL_WORDS = ("flip", "counterfactual", "cf_", "ssim", "fid", "kid", "realism",
                        "lesion", "validity", "sparsity", "n2p", "p2n", "cycle", "twin", "psnr",
                        "l1", "generator")


@dataclass
class MetricRow:
    name: str
    value: float | None
    low: float | None = None
    high: float | None = None

    @property
    def is_counterfactual(self) -> bool:
        name = self.name.lower()
        group = name.replace(".", "/").split("/")[0] if "/" in name or "." in name else ""
        if group in COUNTERFACTUAL_GROUPS or group in CLASSIFIER_GROUPS:
            return group in COUNTERFACTUAL_GROUPS
        return any(word in name for word in COUNTERFACTUAL_WORDS)

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


def _interval_dict(d: dict[str, Any]) -> MetricRow | None:
    value = next((d[k] for k in _VALUE_KEYS if k in d), None)
    low = next((d[k] for k in _LOW_KEYS if k in d), None)
    high = next((d[k] for k in _HIGH_KEYS if k in d), None)
    if _number(value) is None:
        return None
    return MetricRow("", _number(value), _number(low), _number(high))


def metric_rows(metrics: dict[str, Any], prefix: str = "") -> list[MetricRow]:
    """Every numeric metric with its interval when one is given; other entries are skipped."""
    rows: list[MetricRow] = []
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            row = _interval_dict(value)
            if row is not None:
                row.name = name
                rows.append(row)
            else:
                rows.extend(metric_rows(value, f"{name}."))
            continue
        number = _number(value)
        if number is None or key.endswith(_LOW_SUFFIXES + _HIGH_SUFFIXES):
            continue
        row = MetricRow(name, number)
        for low_s, high_s in zip(_LOW_SUFFIXES, _HIGH_SUFFIXES, strict=True):
            if f"{key}{low_s}" in metrics and f"{key}{high_s}" in metrics:
                row.low = _number(metrics[f"{key}{low_s}"])
                row.high = _number(metrics[f"{key}{high_s}"])
                break
        pair = metrics.get(f"{key}_ci")
        if row.low is None and isinstance(pair, list | tuple) and len(pair) == 2:
            row.low, row.high = _number(pair[0]), _number(pair[1])
        rows.append(row)
    return rows
