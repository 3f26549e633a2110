"""`cfxray study report` joins the version's lineage: the audit checks the report and walks
from it to the raw data, the model card shows its numbers, and an edited report breaks the
audit. Answers to another version of a study are left out."""

from __future__ import annotations

import json

import pytest
from audit_chain_builder import changed
from study_builder import cfxray, create_study, study_params

from cfxray.study.definition import load_study
from cfxray.study.reading import Desk
from cfxray.study.store import Answer, AnswerStore


@pytest.fixture(scope="module")
def reported(study_project, tmp_path_factory):
    """A study answered by three scripted readers through the reading logic, reported."""
    root = tmp_path_factory.mktemp("reported")
    study = load_study(create_study(study_project, root / "clinic"))
    database = f"sqlite:///{root / 'answers.sqlite'}"
    desk = Desk(study, AnswerStore(database))
    key = study.key()
    for n, reader in enumerate(("r1", "r2", "r3")):
        state = desk.next(reader)
        while state["item"] is not None:
            item = state["item"]
            truth = key[item["id"]]
            # r1 always right, r2 always wrong where there is a truth, r3 the first choice.
            right = truth.get("real") or truth.get("decision") or "4"
            wrong = next(c for c in item["choices"] if c != right)
            answer = (right, wrong, item["choices"][0])[n]
            state = desk.answer({"study": study.sha256, "reader": reader, "item": item["id"],
                                 "answer": answer, "elapsed_ms": 1000 + n})
    # An answer to another study of the same name (e.g. re-created after a change) is ignored.
    desk.store.add(Answer("f" * 64, study.name, "r1", "pair-1", "real_or_counterfactual", "a",
                          5))
    desk.store.close()
    params = study_params(root / "params.yaml")
    out = root / "reports" / "clinic"
    assert cfxray("study", "report", "--study", study.folder, "--database", database,
                  "--out", out, "--params", params) == 0
    return {"study": study, "out": out, "database": database, "params": params}


def test_report_numbers_follow_the_answers(reported):
    summary = json.loads((reported["out"] / "summary.json").read_text())
    pairs = summary["tasks"]["real_or_counterfactual"]
    assert summary["readers"] == ["r1", "r2", "r3"] and summary["answers"] == 48
    assert pairs["per_reader"]["r1"] == 1.0 and pairs["per_reader"]["r2"] == 0.0
    assert pairs["answers"] == 12  # the other study's answer is left out
    for arm in ("counterfactual", "saliency"):
        part = summary["tasks"]["prediction"][arm]
        assert part["per_reader"]["r1"] == 1.0 and part["per_reader"]["r2"] == 0.0
        assert part["low"] <= part["value"] <= part["high"]
    assert summary["tasks"]["realism"]["per_reader"]["r1"] == {"real": 4.0,
                                                                "counterfactual": 4.0}
    html = (reported["out"] / "report.html").read_text()
    assert "data:image/png;base64," in html and reported["study"].sha256 in html
    assert (reported["out"] / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_joins_the_version_lineage(reported, study_project, capsys):
    capsys.readouterr()
    assert cfxray("audit", "--model-repo", study_project.repo, "--version", 1) == 0
    out = capsys.readouterr().out
    assert "ok reader study 'clinic'" in out and "audit passed" in out
    for name in ("classifier", "generator_n2p", "generator_p2n", "explain"):
        card = (study_project.repo / name / "1" / "model_card.md").read_text()
        assert "## Reader studies" in card and "clinic: 3 readers, 48 answers" in card
        assert "prediction of the classifier's decision with counterfactuals" in card

    # From the report down: study -> served version folders -> export -> ... -> raw data.
    assert cfxray("audit", "--artifact", reported["out"], "--json") == 0
    walked = json.loads(capsys.readouterr().out)

    def roles(node):
        yield node["role"]
        for child in node["inputs"]:
            yield from roles(child)

    assert {"study", "export", "evaluation", "cyclegan", "classifier", "prepared",
            "raw"} <= set(roles(walked["models"][0]))


def test_an_edited_report_breaks_the_audit(reported, study_project, capsys):
    with changed(reported["out"] / "summary.json"):
        capsys.readouterr()
        assert cfxray("audit", "--model-repo", study_project.repo, "--version", 1,
                      "--model", "classifier") == 1
        out = capsys.readouterr().out
    assert "reader study 'clinic': report" in out and "changed since it was recorded" in out
    entry = study_project.repo / "classifier" / "1" / "reader_studies.json"
    text = entry.read_text()
    for edited in (text.replace('"readers": 3', '"readers": 30'), text[: len(text) // 2]):
        with changed(entry, edited.encode()):
            assert cfxray("audit", "--model-repo", study_project.repo, "--version", 1,
                          "--model", "classifier") == 1
        assert "document reader_studies.json changed" in capsys.readouterr().out


def test_report_again_replaces_its_entry(reported, study_project):
    assert cfxray("study", "report", "--study", reported["study"].folder, "--database",
                  reported["database"], "--out", reported["out"], "--params",
                  reported["params"]) == 0
    studies = json.loads((study_project.repo / "classifier" / "1" / "reader_studies.json")
                         .read_text())["studies"]
    assert [s["report"] for s in studies].count(str(reported["out"].resolve())) == 1


def test_report_without_answers_is_refused(reported, tmp_path, capsys):
    empty = f"sqlite:///{tmp_path / 'empty.sqlite'}"
    assert cfxray("study", "report", "--study", reported["study"].folder, "--database", empty,
                  "--out", tmp_path / "r", "--params", reported["params"]) == 2
    assert "no answers to study clinic" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    assert cfxray("study", "report", "--study", reported["study"].folder, "--database",
                  "nonsense://", "--out", tmp_path / "r", "--params", reported["params"]) == 2
