"""Per-image numbers -> the flat metrics of `metrics.json`, each mean with its bootstrap interval.

Keys are `<group>/<name>` with `<group>/<name>_ci_low` and `_ci_high` beside every estimate
that has an interval; groups are `classifier`, `oracle`, `n2p` and `p2n`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cfxray.evaluation import classifier_metrics as cm
from cfxray.evaluation.bootstrap import Interval, bootstrap_cis, mean_ci
from cfxray.evaluation.counterfactuals import DirectionResult
from cfxray.evaluation.realism import fid, kid

# Per-direction means: metric name -> (per-image column, what it tells a reader).
DIRECTION_MEANS: dict[str, tuple[str, str]] = {
    "validity": ("valid", "counterfactuals the explained classifier assigns to the target class"),
    "oracle_score": ("oracle_valid", "counterfactuals the independent oracle assigns to the target class"),
    "adversarial_fraction": ("adversarial", "flip the explained classifier; the oracle disagrees"),
    "l1": ("l1", "mean absolute intensity change"),
    "ssim": ("ssim", "structural similarity to the original (1 = identical)"),
    "psnr": ("psnr", "peak signal-to-noise ratio in dB (identical images capped at 100)"),
    "sparsity": ("sparsity", "fraction of pixels changed by more than the sparsity threshold"),
    "cycle_l1": ("cycle_l1", "L1 error of the reconstruction through the other generator"),
    "lesion_removal": ("lesion_removal", "fraction of the true lesion signal removed (phantom)"),
    "twin_error_ratio": ("twin_error_ratio", "error vs. the lesion-free twin relative to the original's (<1 = closer)"),
    "change_in_mask": ("change_in_mask", "share of the change inside the lesion mask"),
    "mask_area": ("mask_area", "lesion area fraction: the chance level of change_in_mask"),
    "peak_in_mask": ("peak_in_mask", "largest change lies inside the lesion mask"),
    "opacity_in_lungs": ("opacity_in_lungs", "share of added opacity inside the lung fields"),
    "lung_area": ("lung_area", "lung area fraction: the chance level of opacity_in_lungs"),
    "change_on_shortcut": ("change_on_shortcut", "share of the change on the shortcut marker's region"),
    "shortcut_area": ("shortcut_area", "marker region's area fraction: the chance level of change_on_shortcut"),
}


@dataclass(frozen=True)
class BootstrapSettings:
    n_resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0


def put(metrics: dict[str, float], key: str, interval: Interval) -> None:
    metrics[key] = interval.estimate
    metrics[f"{key}_ci_low"] = interval.low
    metrics[f"{key}_ci_high"] = interval.high


def classifier_summary(prefix: str, labels: np.ndarray, probs: np.ndarray, threshold: float,
                       n_bins: int, boot: BootstrapSettings) -> dict[str, float]:
    """Accuracy, AUC, sensitivity, specificity, F1 and ECE, each with its interval."""
    def statistic(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
        return cm.classification_summary(y, p, threshold, n_bins)

    metrics: dict[str, float] = {}
    intervals = bootstrap_cis(statistic, labels, probs, n_resamples=boot.n_resamples,
                              confidence=boot.confidence, seed=boot.seed)
    for name, interval in intervals.items():
        put(metrics, f"{prefix}/{name}", interval)
    metrics[f"{prefix}/n_images"] = float(len(labels))
    return metrics


def direction_columns(result: DirectionResult) -> dict[str, np.ndarray]:
    """Per-image values of every per-direction metric this result has, by metric name.

    A column the data cannot have (ground truth on real data, the oracle's numbers without an
    oracle) gives no name at all; NaN marks an image for which a value is undefined (where a
    change lies, for a counterfactual that changes nothing).
    """
    cols = result.per_image
    values = {key: cols[column] for key, (column, _) in DIRECTION_MEANS.items() if column in cols}
    values["target_prob_change"] = cols["prob_after"] - cols["prob_before"]
    if "oracle_prob_after" in cols:
        values["oracle_prob_change"] = cols["oracle_prob_after"] - cols["oracle_prob_before"]
    # Flip rate: validity among originals the classifier put in the source class; an image
    # already misclassified is "valid" without any change.
    values["flip_rate"] = cols["valid"][cols["classified_as_source"] > 0]
    return values


def direction_means(result: DirectionResult) -> dict[str, float | None]:
    """Plain means under the names `direction_summary` gives `metrics.json` (without the
    direction prefix and the intervals): the CycleGAN trainer's per-epoch validation numbers
    and its `summary.json`. None where no image defines a value."""
    means: dict[str, float | None] = {"n_images": float(len(result))}
    for key, values in direction_columns(result).items():
        kept = values[~np.isnan(values)]
        means[key] = float(kept.mean()) if kept.size else None
    return means


def direction_summary(result: DirectionResult, boot: BootstrapSettings,
                      max_adversarial_fraction: float = 0.2) -> dict[str, float]:
    """Means with intervals of every per-image column this data has, plus mean changes.

    A column the data cannot have (ground truth on real data) gives no key at all; a column
    undefined for every image (where a change lies, for a model that changes nothing) is NaN.
    """
    d = result.direction
    metrics: dict[str, float] = {f"{d}/n_images": float(len(result))}
    for key, values in direction_columns(result).items():
        put(metrics, f"{d}/{key}", mean_ci(values, boot.n_resamples, boot.confidence, boot.seed))
    # The flag: the explained classifier flips where an independent classifier does not, the
    # signature of an adversarial pattern rather than a change of the anatomy.
    metrics[f"{d}/adversarial_flag"] = float(
        metrics[f"{d}/adversarial_fraction"] > max_adversarial_fraction)
    return metrics


def realism_summary(direction: str, counterfactual: np.ndarray, real_target: np.ndarray,
                    reference: np.ndarray, subset_size: int, n_subsets: int,
                    seed: int) -> dict[str, float]:
    """KID/FID of counterfactuals vs. the reference set, and of real target-class test images
    vs. the same set: the value a perfect generator would reach at this sample size."""
    kid_cf, kid_cf_std = kid(counterfactual, reference, subset_size, n_subsets, seed)
    kid_real, _ = kid(real_target, reference, subset_size, n_subsets, seed)
    return {
        f"{direction}/kid": kid_cf,
        f"{direction}/kid_std": kid_cf_std,
        f"{direction}/kid_real_reference": kid_real,
        f"{direction}/fid": fid(counterfactual, reference),
        f"{direction}/fid_real_reference": fid(real_target, reference),
    }
