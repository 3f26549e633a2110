"""Reader-study statistics against worked examples and properties that must hold."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cfxray.study.statistics import (
    binomial_p,
    difference,
    fleiss_kappa,
    mean,
    two_way_bootstrap,
)

# Fleiss (1971), as worked in most textbooks: 10 subjects, 14 raters, 5 categories; counts of
# raters per category for each subject. Kappa = 0.210.
FLEISS_COUNTS = [(0, 0, 0, 0, 14), (0, 2, 6, 4, 2), (0, 0, 3, 5, 6), (0, 3, 9, 2, 0),
                 (2, 2, 8, 1, 1), (7, 7, 0, 0, 0), (3, 2, 6, 3, 0), (2, 5, 3, 2, 2),
                 (6, 5, 2, 1, 0), (0, 2, 2, 3, 7)]


def _answers_from_counts(counts) -> np.ndarray:
    """readers x items table whose per-item category counts are `counts`."""
    columns = [[str(c + 1) for c, n in enumerate(row) for _ in range(n)] for row in counts]
    return np.array(columns, dtype=object).T


def test_fleiss_kappa_matches_the_worked_example():
    assert fleiss_kappa(_answers_from_counts(FLEISS_COUNTS)) == pytest.approx(0.210, abs=5e-4)


def test_fleiss_kappa_uses_complete_items_and_is_none_when_undefined():
    answers = _answers_from_counts(FLEISS_COUNTS)
    with_gap = np.concatenate([answers, np.full((14, 1), None, dtype=object)], axis=1)
    with_gap[0, -1] = "1"  # an item only one reader answered does not count
    assert fleiss_kappa(with_gap) == pytest.approx(fleiss_kappa(answers))
    assert fleiss_kappa(answers[:1]) is None  # one reader
    assert fleiss_kappa(np.full((3, 4), "a", dtype=object)) is None  # all the same
    perfect = np.array([["a", "b", "a", "b"]] * 3, dtype=object)
    assert fleiss_kappa(perfect) == pytest.approx(1.0)


def test_two_way_bootstrap_brackets_the_estimate_and_sees_reader_spread():
    rng = np.random.default_rng(0)
    items = rng.random((1, 40)) < 0.7
    same_readers = np.repeat(items, 6, axis=0).astype(float)
    # Same items, but three readers always right and three at chance: a reader effect.
    spread = same_readers.copy()
    spread[:3] = 1.0
    spread[3:] = (rng.random((3, 40)) < 0.5)
    for table in (same_readers, spread):
        interval = two_way_bootstrap(mean, [table], 500, 0.95, seed=1)
        assert interval.low <= interval.estimate <= interval.high
        assert interval.estimate == pytest.approx(table.mean())
    only_items = two_way_bootstrap(mean, [same_readers], 500, 0.95, seed=1)
    with_readers = two_way_bootstrap(mean, [spread], 500, 0.95, seed=1)
    assert with_readers.width > only_items.width
    assert two_way_bootstrap(mean, [spread], 500, 0.95, seed=1) == with_readers  # seeded


def test_two_way_bootstrap_skips_unanswered_cells_and_constant_tables():
    table = np.array([[1.0, np.nan, 0.0], [1.0, 1.0, np.nan]])
    assert two_way_bootstrap(mean, [table], 200, 0.9, seed=0).estimate == pytest.approx(0.75)
    constant = np.full((3, 5), 4.0)
    interval = two_way_bootstrap(mean, [constant], 200, 0.9, seed=0)
    assert (interval.estimate, interval.low, interval.high) == (4.0, 4.0, 4.0)
    real, fake = np.full((2, 3), 4.0), np.full((2, 5), 2.5)
    assert two_way_bootstrap(difference, [real, fake], 200, 0.9, seed=0).estimate == 1.5
    assert math.isnan(two_way_bootstrap(mean, [np.full((2, 2), np.nan)], 50, 0.9, 0).estimate)


def test_binomial_test_against_chance():
    assert binomial_p(10, 10) == pytest.approx(2 * 0.5 ** 10)
    assert binomial_p(5, 10) == pytest.approx(1.0)
    assert binomial_p(0, 0) is None
