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


def bootstrap_ci(
    statistic: Callable[..., float],
    *samples: np.ndarray,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Point estimate on the full samples and the percentile interval over resamples.

    The samples are paired arrays of equal length (e.g. labels and probabilities) resampled
    with the same indices. Resamples where the statistic is undefined (NaN, e.g. an AUC drawn
    with a single class) are left out; with none left the interval is NaN.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    arrays = [np.asarray(s) for s in samples]
    n = len(arrays[0]) if arrays else 0
    if any(len(a) != n for a in arrays):
        raise ValueError("paired samples must have equal length")
    nan = float("nan")
    if n == 0:
        return Interval(nan, nan, nan)
    estimate = float(statistic(*arrays))
    rng = np.random.default_rng(seed)
    values = np.empty(n_resamples)
    for i in range(n_resamples):
        idx = rng.integers(0, n, size=n)
        values[i] = statistic(*(a[idx] for a in arrays))
    values = values[~np.isnan(values)]
    if not values.size or math.isnan(estimate):
        return Interval(estimate, nan, nan)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return Interval(estimate, float(low), float(high))


def mean_ci(values: np.ndarray, n_resamples: int = 1000, confidence: float = 0.95,
            seed: int = 0) -> Interval:
    """Interval for the mean of per-image values, NaNs (undefined per image) dropped first."""
    values = np.asarray(values, dtype=float)
    return bootstrap_ci(np.mean, values[~np.isnan(values)], n_resamples=n_resamples,
                        confidence=confidence, seed=seed)
