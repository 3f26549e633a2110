"""Shortcut detection on hand-made images, masks and classifiers whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from eval_phantom_builder import lung_fields, phantom_split
from test_eval_counterfactuals import BOOT, AddPatch, Lookup, Scored, measure
from torch import nn

from cfxray.data.tensors import SplitData
from cfxray.evaluation import shortcut
from cfxray.evaluation.evaluate import pneumonia_probabilities
from cfxray.evaluation.report import warnings_section
from cfxray.evaluation.summary import direction_summary

REGION = torch.zeros(32, 32, dtype=torch.bool)
REGION[26:31, 20:30] = True  # a lower corner, off the lung fields
MARKER_LEVEL = 250


def with_marker(data: SplitData, marked: list[bool]) -> SplitData:
    """The split with a bright block on REGION in the `marked` images, and the toggled twins."""
    on = data.images.clone()
    on[:, REGION] = MARKER_LEVEL
    has = torch.tensor(marked)
    data.shortcut_masks = REGION.expand(len(data), -1, -1).clone()
    data.has_shortcut = has
    data.shortcut_twins = torch.where(has[:, None, None], data.images, on)
    data.images = torch.where(has[:, None, None], on, data.images)
    return data


def marker_score(x: torch.Tensor) -> torch.Tensor:  # reads only the marker region
    return torch.sigmoid(40 * (x[:, 0][:, REGION].mean(dim=1) - 0.8))


def lung_score(x: torch.Tensor) -> torch.Tensor:  # reads only the lungs
    return torch.sigmoid(40 * (x[:, 0][:, lung_fields()].amax(dim=1) - 0.6))


def test_region_is_off_the_lungs_and_pairs_differ_only_there() -> None:
    data = with_marker(phantom_split(4, seed=1), [True, False] * 4)
    assert not (REGION & lung_fields()).any()
    marked, plain = shortcut.marker_pairs(data)
    assert ((marked.images != plain.images) == REGION).all()
    assert (marked.images[:, REGION] == MARKER_LEVEL).all()


def test_change_on_the_marker_region_per_direction() -> None:
    data = with_marker(phantom_split(4, seed=2), [False] * 4 + [True] * 4)
    lung_patch = torch.zeros(32, 32, dtype=torch.bool)
    lung_patch[13:17, 7:11] = True
    # n2p adds the marker, or brightens the lungs; p2n erases the marker (PNEUMONIA images all
    # carry it here), or does nothing
    adds = measure("n2p", data, AddPatch(REGION), nn.Identity())
    lungs = measure("n2p", data, AddPatch(lung_patch), nn.Identity())
    erases = measure("p2n", data, nn.Identity(), Lookup(data.images, data.shortcut_twins))
    still = measure("p2n", data, nn.Identity(), nn.Identity())
    area = REGION.float().mean().item()
    assert np.allclose(adds.per_image["change_on_shortcut"], 1.0)
    assert np.allclose(adds.per_image["shortcut_area"], area)
    assert np.allclose(lungs.per_image["change_on_shortcut"], 0.0)
    assert np.allclose(erases.per_image["change_on_shortcut"], 1.0)
    assert np.isnan(still.per_image["change_on_shortcut"]).all()  # no change: undefined

    metrics = {}
    for result in (adds, erases):
        metrics |= direction_summary(result, BOOT)
    assert shortcut.change_flags(metrics, max_ratio=3.0) == {"n2p/shortcut_flag": 1.0,
                                                            "p2n/shortcut_flag": 1.0}
    metrics = direction_summary(lungs, BOOT) | direction_summary(still, BOOT)
    assert metrics["n2p/shortcut_area"] == pytest.approx(area)
    assert shortcut.change_flags(metrics, max_ratio=3.0) == {"n2p/shortcut_flag": 0.0,
                                                            "p2n/shortcut_flag": 0.0}


def test_the_flag_is_relative_to_the_region_area() -> None:
    metrics = {"n2p/change_on_shortcut": 0.2, "n2p/shortcut_area": 0.05,
               "p2n/change_on_shortcut": 0.1, "p2n/shortcut_area": 0.05}
    assert shortcut.change_flags(metrics, max_ratio=3.0) == {"n2p/shortcut_flag": 1.0,
                                                            "p2n/shortcut_flag": 0.0}


def test_marker_shift_tells_a_classifier_that_reads_the_marker() -> None:
    data = with_marker(phantom_split(6, seed=3), [True, False] * 6)
    marked, plain = shortcut.marker_pairs(data)
    metrics = {}
    for name, score in (("classifier", marker_score), ("oracle", lung_score)):
        p_with = pneumonia_probabilities(Scored(score), marked, 4, torch.device("cpu"))
        p_without = pneumonia_probabilities(Scored(score), plain, 4, torch.device("cpu"))
        metrics |= shortcut.shift_summary(name, p_with, p_without, 0.5, BOOT, max_shift=0.1)
    assert metrics["classifier/shortcut_shift"] == pytest.approx(1.0, abs=0.01)
    assert metrics["classifier/shortcut_decision_flips"] == 1.0
    assert metrics["classifier/shortcut_shift_flag"] == 1.0
    assert metrics["oracle/shortcut_shift"] == 0.0 and metrics["oracle/shortcut_shift_flag"] == 0.0
    assert metrics["oracle/shortcut_decision_flips"] == 0.0

    notes = warnings_section(metrics | {"n2p/shortcut_flag": 1.0, "n2p/change_on_shortcut": 0.5,
                                 "n2p/shortcut_area": 0.05})
    assert "moves the explained classifier" in notes and "moves the oracle" not in notes
    assert "edit the marker" in notes
    assert "marker" not in warnings_section({k: v for k, v in metrics.items() if "classifier" not in k})
