"""`cfxray reproduce` re-runs the recorded training and evaluation on the recorded inputs."""

from __future__ import annotations

import json

from audit_chain_builder import cfxray, changed


def test_reproduce_classifier_reports_recorded_vs_new_metrics(audit_project, tmp_path, capsys):
    capsys.readouterr()
    code = cfxray("reproduce", "--model-repo", audit_project.repo, "--version", "2",
                  "--stage", "classifier", "evaluation", "--out", tmp_path / "rerun", "--json")
    out = capsys.readouterr().out
    report = json.loads(out[out.index('{\n  "tolerance"'):])
    assert code == 0 and report["reproduced"]
    stage, evaluation = report["stages"]
    recorded_eval = json.loads((audit_project.root / "reports" / "eval2" / "metrics.json")
                               .read_text())
    eval_rows = {r["metric"]: r for r in evaluation["metrics"]}
    assert eval_rows["classifier/auc"]["recorded"] == recorded_eval["classifier/auc"]
    assert eval_rows["classifier/auc"]["reproduced"] is not None
    assert evaluation["identical_weights"] is None
    assert stage["original"] == str(audit_project.classifier2)  # version 2's classifier
    recorded = json.loads((audit_project.classifier2 / "lineage.json").read_text())
    new = json.loads((tmp_path / "rerun" / "classifier" / "lineage.json").read_text())
    assert new["inputs"]["data"]["sha256"] == recorded["inputs"]["data"]["sha256"]
    assert new["params"] == recorded["params"]
    rows = {r["metric"]: r for r in stage["metrics"]}
    assert "train_seconds" not in rows  # run facts are not model metrics
    for name in ("test_auc", "test_loss", "best_val_auc"):
        assert rows[name]["recorded"] == recorded["metrics"][name]
        assert rows[name]["reproduced"] == new["metrics"][name]
        assert rows[name]["abs_diff"] == abs(new["metrics"][name] - recorded["metrics"][name])
    assert stage["identical_weights"] in (True, False)
    assert stage["outside_tolerance"] == [r["metric"] for r in rows.values()
                                          if r["abs_diff"] > 0.02 and r["rel_diff"] > 0.02]


def test_reproduce_flags_a_recorded_metric_the_rerun_does_not_match(audit_project, tmp_path,
                                                                    capsys):
    """A record whose metric was edited after the run cannot be reproduced, and says which."""
    record_file = audit_project.classifier / "lineage.json"
    record = json.loads(record_file.read_text())
    record["metrics"]["test_loss"] += 0.5
    with changed(record_file, json.dumps(record).encode()):
        code = cfxray("reproduce", "--model-repo", audit_project.repo, "--version", "1",
                      "--out", tmp_path / "rerun")
    out = capsys.readouterr().out
    assert code == 1
    assert "NOT reproduced (test_loss off by more than the tolerance)" in out


def test_reproduce_refuses_when_the_training_data_changed(audit_project, tmp_path, capsys):
    with changed(audit_project.prepared / "train.pt"):
        code = cfxray("reproduce", "--model-repo", audit_project.repo, "--version", "1",
                      "--out", tmp_path / "rerun")
    err = capsys.readouterr().err
    assert code == 2
    assert "cannot reproduce classifier" in err and "data" in err
    assert not (tmp_path / "rerun" / "classifier" / "lineage.json").exists()
