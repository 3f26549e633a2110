"""Classifier metrics against values worked out by hand."""

import numpy as np
import pytest

from cfxray.evaluation import classifier_metrics as cm


def test_confusion_matrix_and_rates_by_hand():
    labels = np.array([0, 0, 1, 1, 1])
    preds = np.array([0, 1, 1, 1, 0])
    # rows actual, columns predicted: TN=1 FP=1 / FN=1 TP=2
    assert cm.confusion_matrix(labels, preds).tolist() == [[1, 1], [1, 2]]
    assert cm.accuracy(labels, preds) == pytest.approx(3 / 5)
    assert cm.sensitivity(labels, preds) == pytest.approx(2 / 3)
    assert cm.specificity(labels, preds) == pytest.approx(1 / 2)
    assert cm.f1_score(labels, preds) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))


def test_rates_undefined_without_the_class():
    labels = np.array([0, 0])
    assert np.isnan(cm.sensitivity(labels, np.array([0, 1])))
    assert np.isnan(cm.roc_auc(labels, np.array([0.2, 0.7])))


def test_auc_and_roc_points_by_hand():
    labels = np.array([0, 0, 1, 1])
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    # positive 0.35 beats one negative of two, 0.8 beats both: 3 of 4 pairs
    assert cm.roc_auc(labels, scores) == pytest.approx(0.75)
    fpr, tpr, thresholds = cm.roc_curve(labels, scores)
    assert fpr.tolist() == [0, 0, 0.5, 0.5, 1]
    assert tpr.tolist() == [0, 0.5, 0.5, 1, 1]
    assert thresholds[0] == np.inf and thresholds[1:].tolist() == [0.8, 0.4, 0.35, 0.1]
    assert np.trapz(tpr, fpr) == pytest.approx(0.75)


def test_tied_scores_count_half_and_move_diagonally():
    labels = np.array([0, 1, 0, 1])
    scores = np.array([0.5, 0.5, 0.2, 0.9])
    # pairs: (0.5 vs 0.5)=0.5, (0.5 vs 0.2)=1, (0.9 vs 0.5)=1, (0.9 vs 0.2)=1 -> 3.5/4
    assert cm.roc_auc(labels, scores) == pytest.approx(3.5 / 4)
    fpr, tpr, _ = cm.roc_curve(labels, scores)
    assert np.trapz(tpr, fpr) == pytest.approx(3.5 / 4)


def test_ece_and_reliability_bins_by_hand():
    labels = np.array([0, 1, 1, 1])
    probs = np.array([0.05, 0.15, 0.95, 0.85])
    # bins 0, 1, 8, 9 hold one image each: |0.05-0| + |0.15-1| + |0.85-1| + |0.95-1|, over 4
    assert cm.expected_calibration_error(labels, probs) == pytest.approx(1.1 / 4)
    bins = cm.reliability_bins(labels, probs)
    assert [b.count for b in bins] == [1, 1, 0, 0, 0, 0, 0, 0, 1, 1]
    assert bins[1].confidence == pytest.approx(0.15) and bins[1].frequency == 1.0


def test_ece_zero_when_calibrated_and_probability_one_in_last_bin():
    labels = np.array([1, 0, 0, 0, 1])
    probs = np.array([0.25, 0.25, 0.25, 0.25, 1.0])
    assert cm.expected_calibration_error(labels, probs) == pytest.approx(0.0)
    assert cm.reliability_bins(labels, probs)[-1].count == 1


def test_summary_uses_the_threshold():
    labels = np.array([0, 1, 1])
    probs = np.array([0.4, 0.6, 0.45])
    assert cm.classification_summary(labels, probs)["sensitivity"] == pytest.approx(0.5)
    assert cm.classification_summary(labels, probs, threshold=0.42)["sensitivity"] == 1.0
