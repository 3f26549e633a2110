"""Percentile bootstrap: contains the estimate, narrows with more data, reproducible."""

import numpy as np

from cfxray.evaluation.bootstrap import bootstrap_ci, mean_ci
from cfxray.evaluation.classifier_metrics import roc_auc


def test_interval_contains_estimate_and_narrows_with_n():
    rng = np.random.default_rng(1)
    small = mean_ci(rng.normal(0.5, 0.2, size=20), n_resamples=500)
    large = mean_ci(rng.normal(0.5, 0.2, size=2000), n_resamples=500)
    assert small.contains(small.estimate) and large.contains(large.estimate)
    assert large.width < small.width / 4  # width shrinks like 1/sqrt(n): 10x here


def test_seeded_and_seed_matters():
    values = np.random.default_rng(2).uniform(size=50)
    assert mean_ci(values, seed=3) == mean_ci(values, seed=3)
    assert mean_ci(values, seed=3) != mean_ci(values, seed=4)


def test_paired_resampling_skips_undefined_resamples():
    labels = np.array([0, 1, 0, 1, 1, 0])
    scores = np.array([0.2, 0.9, 0.3, 0.7, 0.4, 0.5])
    ci = bootstrap_ci(roc_auc, labels, scores, n_resamples=300)
    assert ci.estimate == roc_auc(labels, scores)
    assert 0 <= ci.low <= ci.estimate <= ci.high <= 1


def test_nan_values_dropped_and_empty_is_nan():
    ci = mean_ci(np.array([1.0, np.nan, 1.0]))
    assert (ci.estimate, ci.low, ci.high) == (1.0, 1.0, 1.0)
    assert np.isnan(mean_ci(np.array([np.nan])).estimate)
