"""The real `cfxray export` publishes versions the audit accepts, with sealed model cards and
the hash of each model's config.pbtxt in every version's record."""

from __future__ import annotations

import json

from audit_chain_builder import cfxray

from cfxray.contract import MODEL_NAMES
from cfxray.lineage import sha256_file


def test_exported_versions_pass_the_audit_with_model_cards(audit_project, capsys):
    repo = audit_project.repo
    for model in MODEL_NAMES:
        for version in (1, 2):
            folder = repo / model / str(version)
            record = json.loads((folder / "lineage.json").read_text())
            assert record["kind"] == f"serving/{model}"
            assert set(record["documents"]) == {"model_card.json", "model_card.md",
                                                "model_card.html"}
            card = json.loads((folder / "model_card.json").read_text())
            assert card["model_details"]["name"] == model  # not the staging folder's name
            assert card["model_details"]["version"]["name"] == str(version)
            # both exports used the same settings, so both records vouch for the served config
            assert record["config"]["sha256"] == sha256_file(repo / model / "config.pbtxt")
            assert record["config"]["text"] == (repo / model / "config.pbtxt").read_text()
    capsys.readouterr()
    code = cfxray("audit", "--model-repo", repo, "--json")
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report["problems"]
    assert [m["name"] for m in report["models"]] == [f"{m}/2" for m in sorted(MODEL_NAMES)]
    assert not any("config.pbtxt" in w for w in report["warnings"])
