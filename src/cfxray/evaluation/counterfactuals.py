"""Run both generators over a split and measure every counterfactual.

For each direction (n2p on NORMAL images, p2n on PNEUMONIA ones) each image gets: the
explained classifier's and the oracle's target-class probability before and after, whether
each flips to the target, proximity (L1, SSIM, PSNR, sparsity), the cycle reconstruction
error through the other generator and, where the data carries ground truth (phantoms), the
lesion numbers (p2n) or the share of added opacity inside the lungs (n2p), and on phantoms
made with the shortcut marker, the share of the change on the marker's region. Images are
processed in batches and only per-image numbers and realism features are kept, so memory
does not grow with image size; `counterfactual_images` regenerates the few images a report
shows. `cfxray evaluate` measures the test split here, and the CycleGAN trainer its
validation and test splits (without oracle or realism features when it has none), so a
number of the same name means the same thing in `metrics.json`, `log.csv` and `summary.json`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from cfxray.conventions import CLASSES, DIRECTIONS
from cfxray.data.tensors import SplitData, unit_images
from cfxray.evaluation import metrics as m

PSNR_CAP_DB = 100.0  # an unchanged image has infinite PSNR; capped so means stay finite
# Changes below half an 8-bit grey level are invisible float round-off (a generator that is
# the identity up to rounding): where a change is located is then undefined, not "outside".
NO_CHANGE = 0.5 / 255


@dataclass
class DirectionResult:
    direction: str
    indices: np.ndarray  # positions in the test split
    per_image: dict[str, np.ndarray] = field(default_factory=dict)  # NaN where undefined
    features: np.ndarray | None = None  # realism features of the counterfactuals

    @property
    def source(self) -> int:
        return DIRECTIONS[self.direction][0]

    @property
    def target(self) -> int:
        return DIRECTIONS[self.direction][1]

    def __len__(self) -> int:
        return len(self.indices)


def generator_pair(generators: Any, direction: str) -> tuple[nn.Module, nn.Module]:
    """(forward generator, its inverse) for a direction: the inverse closes the cycle.
    `generators` is anything holding `n2p` and `p2n` (loaded `Generators`, or the trainer's
    `GeneratorPair`)."""
    if direction == "n2p":
        return generators.n2p, generators.p2n
    return generators.p2n, generators.n2p


@torch.no_grad()
def counterfactual_images(generators: Any, direction: str, images: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Counterfactuals of [0, 1] images and their reconstructions back through the cycle."""
    forward, inverse = generator_pair(generators, direction)
    counterfactuals = forward(images).clamp(0, 1)
    return counterfactuals, inverse(counterfactuals).clamp(0, 1)


def _nan(n: int, device: torch.device) -> torch.Tensor:
    return torch.full((n,), float("nan"), device=device)


def _where_defined(values: torch.Tensor, defined: torch.Tensor) -> torch.Tensor:
    return torch.where(defined, values.float(), _nan(len(values), values.device))


def _ground_truth(direction: str, data: SplitData, idx: torch.Tensor, x: torch.Tensor,
                  cf: torch.Tensor) -> dict[str, torch.Tensor]:
    """Phantom-only numbers; NaN for images without the needed mask or twin."""
    device = x.device
    out: dict[str, torch.Tensor] = {}
    changed = (cf - x).abs().flatten(1).amax(dim=1) > NO_CHANGE
    if direction == "p2n" and data.lesion_masks is not None:
        lesion = data.lesion_masks[idx].to(device).unsqueeze(1)
        has_lesion = lesion.flatten(1).any(dim=1)
        out["change_in_mask"] = _where_defined(m.change_in_mask(x, cf, lesion),
                                               has_lesion & changed)
        out["peak_in_mask"] = _where_defined(m.peak_in_mask(x, cf, lesion),
                                             has_lesion & changed)
        out["mask_area"] = _where_defined(lesion.flatten(1).float().mean(dim=1), has_lesion)
        if data.twins is not None and data.has_twin is not None:
            twin = unit_images(data.twins[idx]).to(device)
            has_twin = data.has_twin[idx].to(device) & has_lesion
            out["lesion_removal"] = _where_defined(m.lesion_removal(x, cf, twin, lesion), has_twin)
            out["twin_error_ratio"] = _where_defined(m.twin_error_ratio(x, cf, twin), has_twin)
    if direction == "n2p" and data.lung_masks is not None:
        lungs = data.lung_masks[idx].to(device).unsqueeze(1)
        has_lungs = lungs.flatten(1).any(dim=1)
        out["opacity_in_lungs"] = _where_defined(m.added_opacity_in_mask(x, cf, lungs),
                                                 has_lungs & changed)
        out["lung_area"] = _where_defined(lungs.flatten(1).float().mean(dim=1), has_lungs)
    if data.shortcut_masks is not None:
        region = data.shortcut_masks[idx].to(device).unsqueeze(1)
        has_region = region.flatten(1).any(dim=1)
        out["change_on_shortcut"] = _where_defined(m.change_in_mask(x, cf, region),
                                                   has_region & changed)
        out["shortcut_area"] = _where_defined(region.flatten(1).float().mean(dim=1), has_region)
    return out


@torch.no_grad()
def _measure_batch(direction: str, data: SplitData, idx: torch.Tensor, generators: Any,
                   classifier: nn.Module, oracle: nn.Module | None, sparsity_threshold: float,
                   device: torch.device) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    source, target = DIRECTIONS[direction]
    x = data.as_float(idx).to(device)
    cf, rec = counterfactual_images(generators, direction, x)
    before, after = classifier.probabilities(x), classifier.probabilities(cf)
    valid, as_source = m.validity(after, target), m.validity(before, source)
    values = {
        "prob_before": before[:, target],
        "prob_after": after[:, target],
        "classified_as_source": as_source.float(),
        "valid": valid.float(),
        "l1": m.l1(x, cf),
        "ssim": m.ssim(x, cf),
        "psnr": m.psnr(x, cf).clamp(max=PSNR_CAP_DB),
        "sparsity": m.sparsity(x, cf, sparsity_threshold),
        "cycle_l1": m.l1(x, rec),
        **_ground_truth(direction, data, idx, x, cf),
    }
    if oracle is not None:
        o_before, o_after = oracle.probabilities(x), oracle.probabilities(cf)
        oracle_valid = m.validity(o_after, target)
        values |= {
            "oracle_prob_before": o_before[:, target],
            "oracle_prob_after": o_after[:, target],
            "oracle_valid": oracle_valid.float(),
            # the explained classifier flips (source before, target after); the oracle disagrees
            "adversarial": (as_source & valid & ~oracle_valid).float(),
        }
    return values, cf


def measure_direction(direction: str, data: SplitData, generators: Any,
                      classifier: nn.Module, oracle: nn.Module | None = None,
                      feature_net: nn.Module | None = None, batch_size: int = 64,
                      sparsity_threshold: float = 0.05,
                      device: torch.device | str = "cpu") -> DirectionResult:
    """Per-image numbers (oracle columns only with an oracle) and, with a feature net, realism
    features for every source-class image of `data`."""
    device = torch.device(device)
    source = DIRECTIONS[direction][0]
    indices = data.class_indices(source)
    columns: dict[str, list[torch.Tensor]] = {}
    features = []
    batches = range(0, len(indices), batch_size)
    for start in tqdm(batches, desc=f"counterfactuals {direction} ({CLASSES[source]} images)",
                      unit="batch", leave=False):
        idx = indices[start:start + batch_size]
        values, cf = _measure_batch(direction, data, idx, generators, classifier, oracle,
                                    sparsity_threshold, device)
        for name, value in values.items():
            columns.setdefault(name, []).append(value.detach().float().cpu())
        if feature_net is not None:
            features.append(feature_net(cf).double().cpu())
    per_image = {name: torch.cat(parts).numpy().astype(np.float64)
                 for name, parts in columns.items()}
    return DirectionResult(direction, indices.numpy(), per_image,
                           torch.cat(features).numpy() if features else None)
