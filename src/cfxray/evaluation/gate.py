"""The quality gate: the thresholds a CycleGAN must meet before a pipeline may export it.

No single number judges a counterfactual model (validity alone is met by adversarial noise),
so the gate checks validity, the oracle's agreement, closeness to the original, realism and,
on phantom data where the truth is known, how much of the lesion a pneumonia -> normal
counterfactual removes. Every criterion applies to both directions; a criterion whose metric
cannot be computed on this data (lesion removal without lesion-free twins) is skipped and
reported as such, while a metric that is undefined for a bad model (NaN) fails.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

# criterion name in params.yaml -> (per-direction metric, comparison, directions it applies to)
CRITERIA: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "min_validity": ("validity", ">=", ("n2p", "p2n")),
    "min_oracle_score": ("oracle_score", ">=", ("n2p", "p2n")),
    "min_ssim": ("ssim", ">=", ("n2p", "p2n")),
    "min_lesion_removal": ("lesion_removal", ">=", ("p2n",)),
    "max_kid": ("kid", "<=", ("n2p", "p2n")),
}
# Metrics that exist only on data with ground truth; without it their check is skipped.
GROUND_TRUTH_METRICS = ("lesion_removal",)


@dataclass(frozen=True)
class GateSettings:
    """The `evaluate.gate` section of params.yaml: one threshold per criterion of `CRITERIA`
    (the same names), None to disable it."""

    min_validity: float | None = 0.6
    min_oracle_score: float | None = 0.5
    min_ssim: float | None = 0.6
    min_lesion_removal: float | None = 0.3  # phantom data only (needs lesion-free twins)
    max_kid: float | None = 0.005


@dataclass(frozen=True)
class Check:
    criterion: str
    metric: str  # flat metrics.json key
    op: str
    threshold: float
    value: float | None  # None: not computable on this data
    passed: bool

    @property
    def skipped(self) -> bool:
        return self.value is None

    def describe(self) -> str:
        if self.skipped:
            return f"{self.metric}: skipped (no ground truth in this data)"
        status = "ok" if self.passed else "FAILED"
        return f"{self.metric} = {self.value:.4g} (needs {self.op} {self.threshold:g}) {status}"


@dataclass(frozen=True)
class GateResult:
    checks: tuple[Check, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def message(self) -> str:
        if self.passed:
            return f"quality gate passed ({sum(not c.skipped for c in self.checks)} checks)"
        listed = "; ".join(f"{c.metric} = {c.value:.4g} violates {c.criterion} {c.threshold:g}"
                           for c in self.failures)
        return f"quality gate failed ({len(self.failures)} of {len(self.checks)} criteria): {listed}"


def check_gate(metrics: dict[str, Any], thresholds: GateSettings) -> GateResult:
    """Compare flat metrics with the `evaluate.gate` thresholds."""
    checks = []
    for criterion, threshold in asdict(thresholds).items():
        if threshold is None:  # explicitly disabled
            continue
        name, op, directions = CRITERIA[criterion]
        for direction in directions:
            key = f"{direction}/{name}"
            value = metrics.get(key)
            if value is None and name in GROUND_TRUTH_METRICS:
                checks.append(Check(criterion, key, op, float(threshold), None, True))
                continue
            value = float("nan") if value is None else float(value)
            ok = not math.isnan(value) and (value >= threshold if op == ">=" else value <= threshold)
            checks.append(Check(criterion, key, op, float(threshold), value, ok))
    return GateResult(tuple(checks))


VERDICT_KEY = "gate/passed"  # what `cfxray evaluate` writes into metrics.json: 1.0 or 0.0
VERDICT_BOOL_KEY = "gate_passed"  # a boolean form, accepted from other producers


def read_verdict(metrics: dict[str, Any]) -> bool | None:
    """The verdict recorded in a metrics.json; None when it records none (or an odd value)."""
    value = metrics.get(VERDICT_BOOL_KEY, metrics.get(VERDICT_KEY))
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    return None
