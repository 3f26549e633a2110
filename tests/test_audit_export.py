"""The real `cfxray export` publishes versions the audit accepts, with sealed model cards and
the hash of every file it writes in a model folder (config.pbtxt, configs/gpu.pbtxt, warm-up
data) in every version's record."""

from __future__ import annotations

import json

from audit_chain_builder import cfxray

from cfxray.audit.repository import MODEL_FILES, file_record
from cfxray.contract import EXPLAIN, MODEL_NAMES


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
            # both exports used the same settings, so both records vouch for the served files
            files = record[MODEL_FILES]
            warmup = {"warmup/target_normal", "warmup/target_pneumonia"}
            assert set(files) == {"config.pbtxt", "configs/gpu.pbtxt",
                                  *(warmup if model == EXPLAIN else ())}
            for relative, entry in files.items():
                assert entry == file_record(relative, (repo / model / relative).read_bytes())
            # a config is recorded without its version policy, which rollout.json owns
            assert "max_batch_size: 16" in files["config.pbtxt"]["text"]
            assert "version_policy" in (repo / model / "config.pbtxt").read_text()
            assert "version_policy" not in files["config.pbtxt"]["text"]
    capsys.readouterr()
    code = cfxray("audit", "--model-repo", repo, "--json")
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report["problems"]
    assert [m["name"] for m in report["models"]] == [f"{m}/2" for m in sorted(MODEL_NAMES)]
    assert not any("config.pbtxt" in w for w in report["warnings"])
