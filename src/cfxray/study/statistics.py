"""Reader-study statistics: intervals over readers and items, agreement, tests against chance.

Answers form a readers x items table. Readers differ (one is stricter) and items differ (one
counterfactual is worse), so an interval that resamples only answers is too narrow: the
bootstrap here resamples readers and items independently (the two-way, "crossed" bootstrap)
and recomputes the statistic on the resampled table. Fleiss' kappa (statsmodels) measures how
far readers agree beyond chance on the items all of them answered.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np

from cfxray.evaluation.bootstrap import Interval


def two_way_bootstrap(statistic: Callable[..., float], tables: Sequence[np.ndarray],
                      n_resamples: int, confidence: float, seed: int) -> Interval:
    """Percentile interval of `statistic(*tables)`; the tables share their rows (readers),
    which are resampled once per draw, and each table's columns (its items) are resampled on
    their own. NaN cells are unanswered and left out by the statistic."""
    estimate = float(statistic(*tables))
    if math.isnan(estimate):
        return Interval(math.nan, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    n_readers = tables[0].shape[0]
    values = np.empty(n_resamples)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN draw is skipped below
        for b in range(n_resamples):
            readers = rng.integers(0, n_readers, n_readers)
            drawn = [t[readers][:, rng.integers(0, t.shape[1], t.shape[1])] for t in tables]
            values[b] = statistic(*drawn)
    values = values[~np.isnan(values)]
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail]) if values.size else (math.nan,) * 2
    return Interval(estimate, float(low), float(high))


def mean(table: np.ndarray) -> float:
    return float(np.nanmean(table)) if np.isfinite(table).any() else math.nan


def difference(first: np.ndarray, second: np.ndarray) -> float:
    return mean(first) - mean(second)


def fleiss_kappa(answers: np.ndarray) -> float | None:
    """Fleiss' kappa over the items every reader answered (answers: readers x items, None
    where unanswered); None with fewer than two readers or when it is undefined (every
    answer the same)."""
    from statsmodels.stats.inter_rater import aggregate_raters
    from statsmodels.stats.inter_rater import fleiss_kappa as kappa

    if answers.shape[0] < 2:
        return None
    complete = [j for j in range(answers.shape[1]) if all(a is not None for a in answers[:, j])]
    if not complete:
        return None
    categories = sorted({str(a) for a in answers[:, complete].ravel()})
    codes = np.array([[categories.index(str(a)) for a in answers[:, j]] for j in complete])
    table, _ = aggregate_raters(codes, n_cat=len(categories))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        value = float(kappa(table, method="fleiss"))
    return None if math.isnan(value) else value


def binomial_p(successes: int, trials: int, chance: float = 0.5) -> float | None:
    """Two-sided exact binomial test of the share of correct answers against chance. It
    treats answers as independent; the two-way interval is the one that does not."""
    from scipy.stats import binomtest

    return float(binomtest(successes, trials, chance).pvalue) if trials else None


def rank_sum_p(first: np.ndarray, second: np.ndarray) -> float | None:
    """Two-sided Mann-Whitney U test: do the two groups' ratings differ?"""
    from scipy.stats import mannwhitneyu

    first, second = first[~np.isnan(first)], second[~np.isnan(second)]
    if not first.size or not second.size:
        return None
    return float(mannwhitneyu(first, second, alternative="two-sided").pvalue)
