"""The CycleGAN trainer's `summary.json` and `cfxray evaluate`'s `metrics.json` measure the same
generators on the same split with one implementation: same names, same masking rules, same
numbers (the evaluation adds intervals, realism and the gate)."""

from __future__ import annotations

import json
import math

import torch
from audit_chain_builder import cfxray, small_params
from eval_phantom_builder import SIZE, phantom_split

from cfxray.checkpoint import save_atomic
from cfxray.data.tensors import save_split
from cfxray.models.classifier import ClassifierConfig, build_classifier, classifier_state

# Rules that differ per image between the two places they were once written: images without a
# lesion (empty mask) and unchanged images are undefined, not "no change inside the mask".
MASKED = ("change_in_mask", "peak_in_mask", "mask_area", "lesion_removal", "twin_error_ratio")


def _classifier(seed: int, path):
    """Untrained: agreement needs the same model on both sides, not a good one."""
    torch.manual_seed(seed)
    save_atomic(classifier_state(build_classifier(ClassifierConfig(arch="smallcnn",
                                                                   image_size=SIZE))), path)
    return path


def test_training_summary_equals_the_evaluation_on_the_same_generators(tmp_path):
    torch.set_num_threads(1)
    data = tmp_path / "prepared"
    for split, seed in (("train", 1), ("val", 2)):
        save_split(phantom_split(8, seed), data, split)
    test = phantom_split(8, seed=3)
    lesionless = int(test.class_indices(1)[0])  # a PNEUMONIA image with no lesion drawn
    test.lesion_masks[lesionless] = False
    test.has_twin[lesionless] = False
    save_split(test, data, "test")
    classifier = _classifier(1, tmp_path / "classifier.pt")
    oracle = _classifier(2, tmp_path / "oracle.pt")
    params = small_params(tmp_path)
    generators = tmp_path / "cyclegan"
    assert cfxray("train-cyclegan", "--params", params, "--data", data, "--classifier",
                  classifier, "--oracle", oracle, "--out", generators, "--epochs", 1,
                  "--decay-epochs", 0, "--ngf", 8, "--n-blocks", 1, "--ndf", 8,
                  "--d-layers", 2, "--device", "cpu") == 0
    assert cfxray("evaluate", "--params", params, "--data", data, "--classifier", classifier,
                  "--oracle", oracle, "--generators", generators, "--out", tmp_path / "eval",
                  "--device", "cpu", "--no-gate") == 0

    summary = json.loads((generators / "summary.json").read_text())["test"]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(summary) == {"n2p", "p2n"}
    for direction, row in summary.items():
        assert set(MASKED) <= set(row) if direction == "p2n" else "opacity_in_lungs" in row
        for name, value in row.items():
            recorded = metrics[f"{direction}/{name}"]  # every name is one metrics.json has
            if value is None or recorded is None:
                assert value is None and recorded is None, (direction, name)
            else:
                assert math.isclose(value, recorded, rel_tol=1e-6, abs_tol=1e-9), \
                    (direction, name, value, recorded)
    p2n = summary["p2n"]
    assert p2n["n_images"] == 8 and 0 <= p2n["change_in_mask"] <= 1
