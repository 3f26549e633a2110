"""Quality gate decisions on hand-made metric dictionaries."""

import math
from dataclasses import fields

from cfxray.evaluation.gate import CRITERIA, GateSettings, check_gate

THRESHOLDS = GateSettings(min_validity=0.6, min_oracle_score=0.5, min_ssim=0.5,
                          min_lesion_removal=0.3, max_kid=0.05)


def good_metrics():
    m = {}
    for d in ("n2p", "p2n"):
        m.update({f"{d}/validity": 0.9, f"{d}/oracle_score": 0.8, f"{d}/ssim": 0.8,
                  f"{d}/kid": 0.01})
    m["p2n/lesion_removal"] = 0.7
    return m


def test_good_model_passes():
    result = check_gate(good_metrics(), THRESHOLDS)
    assert result.passed and not result.failures
    assert len(result.checks) == 9


def test_each_failed_criterion_is_named():
    metrics = good_metrics() | {"p2n/validity": 0.2, "n2p/kid": 0.3}
    result = check_gate(metrics, THRESHOLDS)
    assert not result.passed
    assert {c.metric for c in result.failures} == {"p2n/validity", "n2p/kid"}
    message = result.message()
    assert "p2n/validity" in message and "min_validity" in message
    assert "n2p/kid" in message and "max_kid" in message and "n2p/ssim" not in message


def test_threshold_is_inclusive_and_nan_fails():
    metrics = good_metrics() | {"n2p/validity": 0.6, "p2n/ssim": math.nan}
    result = check_gate(metrics, THRESHOLDS)
    assert [c.metric for c in result.failures] == ["p2n/ssim"]


def test_lesion_removal_skipped_without_ground_truth_but_others_required():
    metrics = good_metrics()
    del metrics["p2n/lesion_removal"], metrics["n2p/kid"]
    result = check_gate(metrics, THRESHOLDS)
    skipped = [c for c in result.checks if c.skipped]
    assert [c.metric for c in skipped] == ["p2n/lesion_removal"]
    assert [c.metric for c in result.failures] == ["n2p/kid"]  # missing KID is not skipped


def test_disabled_criteria_are_not_checked():
    off = GateSettings(**{name: None for name in CRITERIA})
    assert check_gate({}, off).passed and not check_gate({}, off).checks
    only_kid = check_gate({"n2p/kid": 0.001, "p2n/kid": 0.001}, GateSettings(
        **{name: None for name in CRITERIA if name != "max_kid"}))
    assert only_kid.passed and [c.criterion for c in only_kid.checks] == ["max_kid"] * 2


def test_every_criterion_is_a_gate_setting():
    """The `evaluate.gate` keys params.yaml accepts are exactly the criteria checked."""
    assert [f.name for f in fields(GateSettings)] == list(CRITERIA)
