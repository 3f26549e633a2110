"""Percentile bootstrap confidence intervals, seeded so a report can be reproduced exactly.

Test splits are small (tens to hundreds of images per class), so every aggregated number is
reported with an interval: a validity of 0.9 on 20 images is not the same claim as on 2000.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    @property
    def width(self) -> float:
        return self.high - self.low


def bootstrap_cis(
    statistic: Callable[..., dict[str, float]],
    *samples: np.ndarray,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Interval]:
    """Point estimates on the full samples and percentile intervals over resamples.

    `statistic` returns several named numbers computed from the same resample (e.g. accuracy,
    AUC and ECE), so they share resamples and are computed once per resample. The samples are
    paired arrays of equal length (e.g. labels and probabilities) resampled with the same
    indices. Resamples where a number is undefined (NaN, e.g. an AUC drawn with a single
    class) are left out for that number; with none left its interval is NaN.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    arrays = [np.asarray(s) for s in samples]
    n = len(arrays[0]) if arrays else 0
    if any(len(a) != n for a in arrays):
        raise ValueError("paired samples must have equal length")
    if n == 0:
        return {}
    estimates = statistic(*arrays)
    rng = np.random.default_rng(seed)
    values = np.empty((n_resamples, len(estimates)))
    for i in range(n_resamples):
        idx = rng.integers(0, n, size=n)
        values[i] = list(statistic(*(a[idx] for a in arrays)).values())
    tail = (1 - confidence) / 2 * 100
    intervals = {}
    for column, (name, estimate) in enumerate(estimates.items()):
        drawn = values[:, column][~np.isnan(values[:, column])]
        if not drawn.size or math.isnan(estimate):
            intervals[name] = Interval(float(estimate), math.nan, math.nan)
            continue
        low, high = np.percentile(drawn, [tail, 100 - tail])
        intervals[name] = Interval(float(estimate), float(low), float(high))
    return intervals


def bootstrap_ci(statistic: Callable[..., float], *samples: np.ndarray,
                 n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> Interval:
    """`bootstrap_cis` for a single number; NaN interval for empty samples."""
    intervals = bootstrap_cis(lambda *a: {"value": float(statistic(*a))}, *samples,
                              n_resamples=n_resamples, confidence=confidence, seed=seed)
    return intervals.get("value", Interval(math.nan, math.nan, math.nan))


def mean_ci(values: np.ndarray, n_resamples: int = 1000, confidence: float = 0.95,
            seed: int = 0) -> Interval:
    """Interval for the mean of per-image values, NaNs (undefined per image) dropped first."""
    values = np.asarray(values, dtype=float)
    return bootstrap_ci(np.mean, values[~np.isnan(values)], n_resamples=n_resamples,
                        confidence=confidence, seed=seed)
