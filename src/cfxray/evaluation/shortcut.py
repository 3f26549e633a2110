"""Does the classifier read the shortcut marker? Two checks on a phantom made with one.

The phantom can tie a burnt-in marker to the PNEUMONIA label in its train and val splits
and leave it independent of the label in test (`cfxray data phantom --shortcut-rate R
--shortcut-confounding C`). A classifier that learnt the marker instead of the lesions is
what an auditor needs counterfactuals to catch, so both sides are measured:

- counterfactual side: the share of each counterfactual's change on the marker's region
  (`change_on_shortcut`, per image in `cfxray.evaluation.counterfactuals`), read against the
  region's area share, its chance level. A generator that explains the classifier by adding
  or erasing the marker puts many times its area's share of the change there.
- classifier side, no generator needed: the classifier's P(PNEUMONIA) on each test image with
  the marker minus without it, the two rendered identically otherwise. A large mean shift
  means the marker alone moves the decision.
"""

from __future__ import annotations

import numpy as np
import torch

from cfxray.conventions import DIRECTIONS
from cfxray.data.tensors import SplitData
from cfxray.evaluation.bootstrap import mean_ci
from cfxray.evaluation.summary import BootstrapSettings, put

# Classifier-side metrics: name -> what it tells a reader.
SHIFT_ROWS = {
    "shortcut_shift": "mean P(PNEUMONIA) with the shortcut marker minus without it (same image)",
    "shortcut_decision_flips": "test images whose decision the marker alone changes",
}


def has_marker_pairs(data: SplitData) -> bool:
    return data.shortcut_twins is not None and data.has_shortcut is not None


def marker_pairs(data: SplitData) -> tuple[SplitData, SplitData]:
    """Every image of the split with the marker and without it (one of the two is the image
    itself, the other its marker-toggled twin)."""
    if data.shortcut_twins is None or data.has_shortcut is None:
        raise ValueError("the split has no shortcut-marker twins")
    has = data.has_shortcut[:, None, None]
    with_marker = torch.where(has, data.images, data.shortcut_twins)
    without_marker = torch.where(has, data.shortcut_twins, data.images)
    return (SplitData(with_marker, data.labels, data.files, data.patient_ids),
            SplitData(without_marker, data.labels, data.files, data.patient_ids))


def shift_summary(prefix: str, p_with: np.ndarray, p_without: np.ndarray, threshold: float,
                  boot: BootstrapSettings, max_shift: float) -> dict[str, float]:
    """Mean shift and decision flips with intervals, and the flag |shift| > max_shift."""
    metrics: dict[str, float] = {}
    put(metrics, f"{prefix}/shortcut_shift",
        mean_ci(p_with - p_without, boot.n_resamples, boot.confidence, boot.seed))
    flips = ((p_with >= threshold) != (p_without >= threshold)).astype(float)
    put(metrics, f"{prefix}/shortcut_decision_flips",
        mean_ci(flips, boot.n_resamples, boot.confidence, boot.seed))
    metrics[f"{prefix}/shortcut_shift_flag"] = float(
        abs(metrics[f"{prefix}/shortcut_shift"]) > max_shift)
    return metrics


def change_flags(metrics: dict[str, float], max_ratio: float) -> dict[str, float]:
    """Per direction: the counterfactuals put more than `max_ratio` times the marker region's
    area share of their change on it (NaN, no change anywhere, does not flag)."""
    flags = {}
    for d in DIRECTIONS:
        if f"{d}/change_on_shortcut" in metrics:
            share, area = metrics[f"{d}/change_on_shortcut"], metrics[f"{d}/shortcut_area"]
            flags[f"{d}/shortcut_flag"] = float(share > max_ratio * area)
    return flags
