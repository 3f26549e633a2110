"""How well the explained classifier separates the classes, and how far to trust its probabilities.

A counterfactual explains a classifier; an explanation of a poor or badly calibrated classifier
is of little use, so the report starts with these numbers. Everything works on NumPy arrays of
labels (0 NORMAL, 1 PNEUMONIA) and PNEUMONIA probabilities, so the same code serves the
explained classifier, the oracle and bootstrap resamples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score

from cfxray.conventions import PNEUMONIA


def _as_arrays(labels: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels, values = np.asarray(labels), np.asarray(values)
    if labels.shape != values.shape or labels.ndim != 1:
        raise ValueError(f"expected two 1-D arrays of equal length, got {labels.shape} "
                         f"and {values.shape}")
    return labels.astype(np.int64), values


def _ratio(num: float, den: float) -> float:
    """num/den, NaN when undefined (e.g. sensitivity on a sample without positives)."""
    return float(num / den) if den else float("nan")


def confusion_matrix(labels: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """2x2 counts, rows = actual class, columns = predicted class (index 0 NORMAL, 1 PNEUMONIA)."""
    labels, preds = _as_arrays(labels, preds)
    matrix = np.zeros((2, 2), dtype=np.int64)
    np.add.at(matrix, (labels, preds.astype(np.int64)), 1)
    return matrix


def accuracy(labels: np.ndarray, preds: np.ndarray) -> float:
    labels, preds = _as_arrays(labels, preds)
    return _ratio(float(np.sum(labels == preds)), labels.size)


def sensitivity(labels: np.ndarray, preds: np.ndarray) -> float:
    """Fraction of PNEUMONIA images called PNEUMONIA (recall of the positive class)."""
    (_, _), (fn, tp) = confusion_matrix(labels, preds)
    return _ratio(tp, tp + fn)


def specificity(labels: np.ndarray, preds: np.ndarray) -> float:
    """Fraction of NORMAL images called NORMAL."""
    (tn, fp), (_, _) = confusion_matrix(labels, preds)
    return _ratio(tn, tn + fp)


def f1_score(labels: np.ndarray, preds: np.ndarray) -> float:
    (_, fp), (fn, tp) = confusion_matrix(labels, preds)
    return _ratio(2 * tp, 2 * tp + fp + fn)


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct score threshold, from (0, 0) to (1, 1).

    Tied scores move the curve diagonally in one step, which is what makes the trapezoidal
    area under it equal the Mann-Whitney AUC.
    """
    labels, scores = _as_arrays(labels, scores)
    order = np.argsort(-scores, kind="mergesort")
    scores, hits = scores[order], labels[order] == PNEUMONIA
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1] if scores.size else []
    tps = np.r_[0, np.cumsum(hits)[last_of_tie]]
    fps = np.r_[0, np.cumsum(~hits)[last_of_tie]]
    thresholds = np.r_[np.inf, scores[last_of_tie]]
    n_pos, n_neg = int(hits.sum()), int((~hits).sum())
    tpr = tps / n_pos if n_pos else np.full(tps.shape, np.nan)
    fpr = fps / n_neg if n_neg else np.full(fps.shape, np.nan)
    return fpr.astype(float), tpr.astype(float), thresholds.astype(float)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative), ties counting one half;
    NaN on a sample holding one class only (a bootstrap resample may draw one)."""
    labels, scores = _as_arrays(labels, scores)
    if np.unique(labels).size < 2:
        return float("nan")
    return float(roc_auc_score(labels == PNEUMONIA, scores))


@dataclass(frozen=True)
class ReliabilityBin:
    lower: float
    upper: float
    count: int
    confidence: float  # mean predicted PNEUMONIA probability in the bin
    frequency: float  # observed fraction of PNEUMONIA in the bin


def reliability_bins(labels: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> list[ReliabilityBin]:
    """Equal-width bins of the predicted PNEUMONIA probability (the last bin includes 1.0).

    Calibration is judged on the positive-class probability (a calibration curve) rather than
    on the top-label confidence: a clinician reads "P(pneumonia) = 0.8" and needs 80% of such
    images to be pneumonia.
    """
    labels, probs = _as_arrays(labels, probs)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.searchsorted(edges, probs, side="right") - 1, 0, n_bins - 1)
    bins = []
    for b in range(n_bins):
        inside = index == b
        count = int(inside.sum())
        bins.append(ReliabilityBin(
            lower=float(edges[b]), upper=float(edges[b + 1]), count=count,
            confidence=float(probs[inside].mean()) if count else float("nan"),
            frequency=float((labels[inside] == PNEUMONIA).mean()) if count else float("nan"),
        ))
    return bins


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> float:
    """Count-weighted mean |confidence - frequency| over the reliability bins."""
    bins = reliability_bins(labels, probs, n_bins)
    total = sum(b.count for b in bins)
    if not total:
        return float("nan")
    return float(sum(b.count * abs(b.confidence - b.frequency) for b in bins if b.count) / total)


def classification_summary(labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5,
                           n_bins: int = 10) -> dict[str, float]:
    """The headline numbers for PNEUMONIA probabilities `probs` (decision: probs >= threshold)."""
    preds = (np.asarray(probs) >= threshold).astype(np.int64)
    return {
        "accuracy": accuracy(labels, preds),
        "auc": roc_auc(labels, probs),
        "sensitivity": sensitivity(labels, preds),
        "specificity": specificity(labels, preds),
        "f1": f1_score(labels, preds),
        "ece": expected_calibration_error(labels, probs, n_bins),
    }
