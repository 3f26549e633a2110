"""`cfxray audit` on a real small chain (real training runs, evaluations and `cfxray export`):
clean passes; each kind of tampering is caught and named; two versions diff; model cards are
written from the chain and sealed."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
from audit_chain_builder import PARAMS, cfxray, changed, moved, removed

from cfxray.contract import MODEL_NAMES
from cfxray.lineage import read_lineage, write_lineage
from cfxray.settings import load_params


@pytest.fixture
def project(audit_project):
    return audit_project


def audit(project, capsys, *extra: str) -> tuple[int, str]:
    capsys.readouterr()
    code = cfxray("audit", "--model-repo", project.repo, *extra)
    return code, capsys.readouterr().out


def test_clean_chain_passes_and_reaches_raw_data_with_dvc_hash(project, capsys):
    code, out = audit(project, capsys, "--json")
    assert code == 0, out
    report = json.loads(out)
    assert report["ok"] and not report["problems"]
    assert {m["name"] for m in report["models"]} == {f"{m}/2" for m in MODEL_NAMES}
    for model in report["models"]:  # each served config checked against its export's record
        assert any(s.startswith("ok config.pbtxt sha256") for s in model["status"]), model

    def walk(node):
        yield node
        for child in node["inputs"]:
            yield from walk(child)

    nodes = [n for n in walk(report["models"][0]) if not n["seen_above"]]
    assert {n["role"] for n in nodes} == {"export", "evaluation", "cyclegan", "classifier",
                                          "prepared", "raw"}
    raw = next(n for n in nodes if n["role"] == "raw")
    assert raw["dvc"]["source"] == "data/phantom.dvc"
    assert raw["dvc"]["md5"] == raw["dvc"]["md5_now"]  # our md5 equals the one DVC wrote
    assert len(raw["dvc"]["rev"]) == 40

    code, out = audit(project, capsys, "--version", "1", "--model", "classifier")
    assert code == 0, out
    assert "audit passed" in out and "classifier/1" in out and "data/phantom" in out


def test_flipped_byte_in_served_model_names_that_model(project, capsys):
    graph = project.root.parent / "broken.png"
    with changed(project.repo / "classifier" / "1" / "model.onnx"):
        code, out = audit(project, capsys, "--version", "1", "--graph", str(graph))
    assert code == 1
    broken = [line for line in out.splitlines() if line.startswith("  broken:")]
    assert len(broken) == 1, out
    assert "classifier/1" in broken[0] and "model.onnx" in broken[0]
    assert "served model version changed" in broken[0]
    assert graph.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the chain drawn, broken box red


def test_changed_dataset_file_breaks_the_raw_data_link(project, capsys):
    image = sorted((project.raw / "train" / "PNEUMONIA").glob("*.png"))[0]
    with changed(image):
        code, out = audit(project, capsys, "--version", "1", "--model", "classifier", "--json")
    assert code == 1
    problems = json.loads(out)["problems"]
    rel = image.relative_to(project.raw).as_posix()
    assert any(p["link"].endswith("-> data -> dataset") and rel in p["message"]
               for p in problems), problems
    assert any("DVC hash" in p["message"] for p in problems), problems


def test_missing_record_is_named(project, capsys):
    with removed(project.oracle / "lineage.json"):
        code, out = audit(project, capsys, "--version", "1", "--model", "classifier")
    assert code == 1
    assert "lineage record missing" in out and str(project.oracle / "lineage.json") in out
    assert "-> oracle" in out


def test_any_artifact_can_be_audited(project, capsys):
    code, out = audit(project, capsys, "--artifact", str(project.evaluation))
    assert code == 0 and "audit passed" in out and "data/phantom" in out
    with changed(project.prepared / "test.pt"):
        code, out = audit(project, capsys, "--artifact", str(project.evaluation))
    assert code == 1 and "-> data: " in out and "test.pt" in out


def test_edited_record_is_caught_downstream(project, capsys):
    record_file = project.oracle / "lineage.json"
    record = json.loads(record_file.read_text())
    record["metrics"]["test_auc"] = 0.99  # a flattering edit; the oracle's files are untouched
    with changed(record_file, json.dumps(record).encode()):
        code, out = audit(project, capsys, "--version", "1", "--model", "classifier")
    assert code == 1
    assert f"the lineage record {record_file} was edited after" in out
    assert "-> oracle" in out


def test_diff_of_two_versions_shows_classifier_params_and_metrics(project, capsys):
    capsys.readouterr()
    code = cfxray("audit", "--model-repo", project.repo, "--model", "classifier",
                  "--diff", "1", "2", "--json")
    assert code == 0
    diff = json.loads(capsys.readouterr().out)
    params = {c["key"]: (c["a"], c["b"]) for c in diff["changes"]["params"]}
    first = load_params(project.root / "params.yaml")["train_classifier"]  # version 1 ran these
    assert params["classifier: lr"] == (first["lr"], 0.01)
    assert params["classifier: seed"] == (first["seed"], 7)
    data = {c["key"] for c in diff["changes"]["data"]}
    assert "classifier: sha256" in data and "served: sha256" in data
    assert "classifier > data: sha256" not in data  # same prepared data in both
    metrics = {c["key"]: (c["a"], c["b"]) for c in diff["changes"]["metrics"]}
    runs = [json.loads((d / "lineage.json").read_text())["metrics"]
            for d in (project.classifier, project.classifier2)]
    assert metrics["classifier: test_loss"] == (runs[0]["test_loss"], runs[1]["test_loss"])
    evals = [json.loads((d / "metrics.json").read_text())
             for d in (project.evaluation, project.evaluation2)]
    for key in evals[0]:
        if evals[0][key] != evals[1][key]:
            assert metrics[f"evaluation: {key}"] == (evals[0][key], evals[1][key])
    assert "generators: sha256" in data  # a CycleGAN per classifier
    assert not diff["broken"]

    cfxray("audit", "--model-repo", project.repo, "--model", "classifier", "--diff", "1", "2")
    text = capsys.readouterr().out
    lr_line = f"  classifier: lr: {first['lr']:g} -> 0.01  ({0.01 - first['lr']:+.4g})"
    assert lr_line in text and "code: unchanged" in text
    changed_estimates = [k for k in evals[0] if not k.endswith(("_ci_low", "_ci_high"))
                         and evals[0][k] != evals[1][k] and f"{k}_ci_low" in evals[0]
                         and evals[0][f"{k}_ci_low"] != evals[1][f"{k}_ci_low"]
                         and evals[0][f"{k}_ci_high"] != evals[1][f"{k}_ci_high"]]
    for key in changed_estimates:  # each interval shown beside its estimate, not on its own
        assert f"evaluation: {key}_ci_low:" not in text
        assert any(line.startswith(f"  evaluation: {key}: ") and line.count("[") == 2
                   for line in text.splitlines())


def test_model_card_written_from_chain_and_sealed(project, capsys):
    version = project.repo / "classifier" / "1"
    code, out = audit(project, capsys, "--model", "classifier", "--version", "1",
                      "--write-card", "--params", str(PARAMS))
    assert code == 0, out
    md = (version / "model_card.md").read_text()
    html = (version / "model_card.html").read_text()
    card = json.loads((version / "model_card.json").read_text())
    assert "SYNTHETIC PHANTOM" in md and "Clinical diagnosis" in md
    metrics = json.loads((project.evaluation / "metrics.json").read_text())
    auc, low, high = (metrics[f"classifier/auc{s}"] for s in ("", "_ci_low", "_ci_high"))
    assert f"| classifier/auc | {auc:.4g} | [{low:.4g}, {high:.4g}] |" in md
    counterfactual = md[md.index("## Counterfactual quality"):md.index("## Release gate")]
    assert "n2p/validity" in counterfactual and "p2n/ssim" in counterfactual
    assert "classifier/auc" not in counterfactual and "<table>" in html
    figures = list(project.evaluation.glob("*.png"))  # the evaluation's, and the lineage
    assert figures and html.count("src='data:image/png;base64,") == len(figures) + 1
    assert "<h2>Lineage</h2>" in html
    raw_sha = json.loads((project.raw / "lineage.json").read_text())["sha256"]
    assert raw_sha in md
    assert card["quantitative_analysis"]["counterfactual_quality"]
    assert json.loads((version / "lineage.json").read_text())["documents"].keys() == {
        "model_card.json", "model_card.md", "model_card.html"}
    # the card is not model content (the served hash is unchanged), but editing it is caught
    code, _ = audit(project, capsys, "--model", "classifier", "--version", "1")
    assert code == 0
    with changed(version / "model_card.md", md.replace("Clinical", "Routine clinical").encode()):
        code, out = audit(project, capsys, "--model", "classifier", "--version", "1")
    assert code == 1 and "document model_card.md changed" in out


def test_generators_trained_against_another_classifier_fail(project, capsys, tmp_path):
    """Version 1's export, recorded as if it had been made from classifier 2 (the record
    `cfxray export --classifier models/classifier2/...` with v1's generators writes)."""
    repo = tmp_path / "model_repository"
    shutil.copytree(project.repo / "classifier" / "1", repo / "classifier" / "1")
    shutil.copy(project.repo / "classifier" / "config.pbtxt", repo / "classifier")
    record = read_lineage(repo / "classifier" / "1")
    inputs = {name: entry["path"] for name, entry in record["inputs"].items()}
    inputs["classifier"] = project.classifier2 / "classifier.pt"
    write_lineage(repo / "classifier" / "1", record["kind"], inputs, record["params"],
                  record["metrics"], extra={k: record[k] for k in ("model", "version", "config")})
    capsys.readouterr()
    code = cfxray("audit", "--model-repo", repo, "--model", "classifier")
    out = capsys.readouterr().out
    assert code == 1
    assert "the chain uses different classifier artifacts" in out
    assert "-> generators -> classifier is" in out


EDITS = {  # what an operator might change in a served config, and its exported text
    "max_batch_size": ("max_batch_size: 16", "max_batch_size: 64"),
    "dims": ("dims: [ 32, 32 ]", "dims: [ 64, 64 ]"),
    "image_size": ('string_value: "32"', 'string_value: "64"'),
}


@pytest.mark.parametrize("field", sorted(EDITS))
def test_edited_served_config_is_named(project, capsys, field):
    config = project.repo / "generator_p2n" / "config.pbtxt"
    text = config.read_text()
    exported, edited = EDITS[field]
    assert exported in text
    with changed(config, text.replace(exported, edited).encode()):
        code, out = audit(project, capsys)
    assert code == 1
    broken = [line for line in out.splitlines() if line.startswith("  broken:")]
    assert len(broken) == 1, out
    assert broken[0].startswith("  broken: generator_p2n/2: ")
    assert f"{config} changed since generator_p2n/2 was exported" in broken[0]
    assert f"was '{exported}'; now '{edited}'" in broken[0]


def test_config_rewritten_by_a_later_export_is_vouched_for_by_its_record(project, capsys):
    """Version 1's config was rewritten (with the same settings) by version 2's export; when
    the settings differ, version 2's record still vouches for the served file."""
    config = project.repo / "classifier" / "config.pbtxt"
    text = config.read_text().replace("max_batch_size: 16", "max_batch_size: 8")
    record_file = project.repo / "classifier" / "2" / "lineage.json"
    record = json.loads(record_file.read_text())
    record["config"] = {"sha256": hashlib.sha256(text.encode()).hexdigest(),
                        "text": text}
    with changed(config, text.encode()), changed(record_file, json.dumps(record).encode()):
        code, out = audit(project, capsys, "--model", "classifier", "--version", "1", "--json")
    assert code == 0, out
    (model,) = json.loads(out)["models"]
    assert any("rewritten by the export of classifier/2" in s for s in model["status"])


def test_partly_published_version_set_is_named(project, capsys, tmp_path):
    """An export that failed after moving classifier/2 and generator_*/2 into place but
    before explain/2: each chain is intact, the set of served versions is not."""
    with moved(project.repo / "explain" / "2", tmp_path / "explain-2"):
        code, out = audit(project, capsys, "--json")
    assert code == 1
    (problem,) = json.loads(out)["problems"]
    assert problem["link"] == str(project.repo)
    assert ("version set that differs across models: classifier/2, generator_p2n/2, "
            "generator_n2p/2, explain/1") in problem["message"]

    with moved(project.repo / "explain" / "1", tmp_path / "explain-1"):
        code, out = audit(project, capsys, "--version", "1")
    assert code == 1 and "explain (none)" in out
    code, out = audit(project, capsys)
    assert code == 0, out


def test_bad_input_is_one_clear_line(project, tmp_path, capsys):
    assert cfxray("audit", "--model-repo", tmp_path / "nowhere") == 2
    assert "model repository not found" in capsys.readouterr().err
    assert cfxray("audit", "--model-repo", project.repo, "--model", "classifier",
                  "--version", "9") == 2
    assert "has no version 9" in capsys.readouterr().err
    assert cfxray("audit", "--model-repo", project.repo, "--diff", "1", "9") == 2
    assert "no version folder" in capsys.readouterr().err
