"""The real `cfxray export` publishes versions the audit accepts, with sealed model cards."""

from __future__ import annotations

import json

import pytest
from audit_chain_builder import cfxray

MODELS = ("classifier", "explain", "generator_n2p", "generator_p2n")


@pytest.mark.slow
def test_exported_version_passes_the_audit_with_model_cards(audit_project, tmp_path, capsys):
    p = audit_project
    repo = tmp_path / "model_repository"
    assert cfxray("export", "--classifier", p.classifier / "classifier.pt", "--generators",
                  p.cyclegan, "--evaluation", p.evaluation, "--out", repo,
                  "--params", p.root / "params.yaml") == 0
    for model in MODELS:
        version = repo / model / "1"
        record = json.loads((version / "lineage.json").read_text())
        assert set(record["documents"]) == {"model_card.json", "model_card.md",
                                            "model_card.html"}
        card = json.loads((version / "model_card.json").read_text())
        assert card["model_details"]["name"] == model  # not the staging folder's name
        assert card["model_details"]["version"]["name"] == "1"
    capsys.readouterr()
    code = cfxray("audit", "--model-repo", repo, "--json")
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report["problems"]
    assert [m["name"] for m in report["models"]] == [f"{m}/1" for m in MODELS]
