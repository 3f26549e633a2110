"""The `evaluate` section of params.yaml as a dataclass (importable without torch, so the CLI
builds its options and checks the section before any metric is computed)."""

from __future__ import annotations

from dataclasses import dataclass, field

from cfxray.evaluation.gate import GateSettings


@dataclass(frozen=True)
class EvaluateSettings:
    batch_size: int = 64
    device: str = "auto"  # auto = cuda when available
    seed: int = 0  # bootstrap and KID subset sampling
    bootstrap_resamples: int = 1000
    confidence: float = 0.95
    threshold: float = 0.5  # P(PNEUMONIA) decision threshold for the classifier metrics
    calibration_bins: int = 10
    sparsity_threshold: float = 0.05  # intensity change that counts a pixel as changed
    feature_seed: int = 0  # seed of the random feature network for KID/FID
    max_reference_images: int = 500  # real target-class train images KID/FID compare with
    kid_subset_size: int = 100
    kid_subsets: int = 50
    max_adversarial_fraction: float = 0.2  # flag above this share of classifier-only flips
    # Shortcut-marker phantoms: flag a direction whose change on the marker region exceeds
    # this multiple of the region's area share, and a classifier whose P(PNEUMONIA) the
    # marker alone moves by more than max_shortcut_shift on average.
    shortcut_change_ratio: float = 3.0
    max_shortcut_shift: float = 0.1
    report_cases: int = 1  # images per kind (best, typical, worst) and direction
    gate: GateSettings = field(default_factory=GateSettings)
