"""Counterfactual measurement with generators and classifiers whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from eval_phantom_builder import lung_fields, phantom_split
from torch import nn

from cfxray.evaluation.counterfactuals import measure_direction
from cfxray.evaluation.evaluate import select_cases
from cfxray.evaluation.realism import RandomFeatureNet
from cfxray.evaluation.summary import BootstrapSettings, direction_summary
from cfxray.models.networks import GeneratorConfig, Generators

BOOT = BootstrapSettings(n_resamples=50)


class Lookup(nn.Module):
    """Maps each known image to a given replacement (e.g. its lesion-free twin)."""

    def __init__(self, sources: torch.Tensor, replacements: torch.Tensor) -> None:
        super().__init__()
        self.sources = sources.float() / 255
        self.replacements = replacements.float() / 255

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = self.sources.flatten(1)
        rows = [int(torch.nonzero((flat == img.flatten()).all(dim=1))[0]) for img in x]
        return self.replacements[rows].unsqueeze(1)


class AddPatch(nn.Module):
    """Brightens a fixed region by 0.3: a counterfactual whose location is known."""

    def __init__(self, region: torch.Tensor) -> None:
        super().__init__()
        self.region = region.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + 0.3 * self.region).clamp(0, 1)


class Scored(nn.Module):
    """A 'classifier' whose P(PNEUMONIA) is a given function of the image."""

    def __init__(self, p_pneumonia) -> None:
        super().__init__()
        self.p = p_pneumonia

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p(x)
        return torch.stack([1 - p, p], dim=1)


def corner(x):  # looks only at the top-left pixel, which carries no anatomy
    return torch.sigmoid(40 * (x[:, 0, 0, 0] - 0.8))


def lung_max(x):  # looks for a bright spot inside the lungs
    return torch.sigmoid(40 * (x[:, 0][:, lung_fields()].amax(dim=1) - 0.6))


def measure(direction, data, n2p, p2n, classifier=None, oracle=None):
    generators = Generators(n2p, p2n, GeneratorConfig(image_size=32))
    return measure_direction(direction, data, generators, classifier or Scored(lung_max),
                             oracle or Scored(lung_max), RandomFeatureNet(), batch_size=4)


def test_twin_counterfactual_scores_perfect_ground_truth():
    data = phantom_split(5, seed=3)
    twin_of = Lookup(data.images, torch.where(data.has_twin[:, None, None], data.twins,
                                              data.images))
    result = measure("p2n", data, nn.Identity(), twin_of)
    cols = result.per_image
    assert len(result) == 5 and set(result.indices) == {5, 6, 7, 8, 9}
    assert np.allclose(cols["lesion_removal"], 1.0)
    assert np.allclose(cols["twin_error_ratio"], 0.0)
    assert cols["peak_in_mask"].tolist() == [1.0] * 5
    # the mask is where the Gaussian lesion exceeds 1/9 of its peak, which holds 8/9 of its
    # mass (up to the 2-pixel lesion's discretisation); chance level is the mask's ~5% area
    assert np.allclose(cols["change_in_mask"], 8 / 9, atol=0.06)
    assert (cols["mask_area"] < 0.1).all()
    assert np.allclose(cols["cycle_l1"], cols["l1"])  # identity back: the lesion stays removed
    summary = direction_summary(result, BOOT)
    assert summary["p2n/lesion_removal"] == pytest.approx(1.0)
    assert summary["p2n/validity"] == 1.0 and summary["p2n/oracle_score"] == 1.0
    assert summary["p2n/adversarial_flag"] == 0.0


def test_added_opacity_inside_or_outside_the_lungs():
    data = phantom_split(4, seed=4)
    lungs = lung_fields()
    inside = torch.zeros_like(lungs)
    inside[13:17, 7:11] = True
    assert (inside <= lungs).all()
    outside = torch.zeros_like(lungs)
    outside[0:4, 14:18] = True
    assert not (outside & lungs).any()
    for region, expected in ((inside, 1.0), (outside, 0.0)):
        result = measure("n2p", data, AddPatch(region), nn.Identity())
        assert np.allclose(result.per_image["opacity_in_lungs"], expected)
        assert np.allclose(result.per_image["sparsity"], 16 / 32**2)


def test_flag_when_the_classifier_flips_but_the_oracle_does_not():
    data = phantom_split(4, seed=5)
    patch = torch.zeros(32, 32, dtype=torch.bool)
    patch[0, 0] = True
    result = measure("n2p", data, AddPatch(patch * 3), nn.Identity(), classifier=Scored(corner))
    summary = direction_summary(result, BOOT, max_adversarial_fraction=0.2)
    assert summary["n2p/validity"] == 1.0 and summary["n2p/oracle_score"] == 0.0
    assert summary["n2p/adversarial_fraction"] == 1.0 and summary["n2p/adversarial_flag"] == 1.0


def test_cases_ranked_by_target_probability_after():
    data = phantom_split(5, seed=6)
    result = measure("n2p", data, nn.Identity(), nn.Identity())
    result.per_image["prob_after"] = np.array([0.2, 0.9, 0.5, 0.1, 0.7])
    assert select_cases(result, per_kind=1) == [("best", 1), ("typical", 2), ("worst", 3)]
    # two per kind overlap on five images: each image is shown once
    assert [row for _, row in select_cases(result, per_kind=2)] == [1, 4, 2, 3, 0]


def test_real_data_without_masks_skips_ground_truth_and_its_gate():
    from cfxray.evaluation.gate import CRITERIA, GateSettings, check_gate

    data = phantom_split(3, seed=7)
    data.lesion_masks = data.lung_masks = data.twins = data.has_twin = None
    for direction in ("n2p", "p2n"):
        result = measure(direction, data, nn.Identity(), nn.Identity())
        assert not {"lesion_removal", "change_in_mask", "opacity_in_lungs"} & set(result.per_image)
    summary = direction_summary(result, BOOT)
    assert "p2n/lesion_removal" not in summary and summary["p2n/ssim"] == pytest.approx(1.0)
    only_lesions = GateSettings(**{**dict.fromkeys(CRITERIA), "min_lesion_removal": 0.3})
    gate = check_gate(summary, only_lesions)
    assert gate.passed and gate.checks[0].skipped
