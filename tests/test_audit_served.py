"""`cfxray audit --url`: a real Triton server is asked what it serves, and a fixed probe
shows whether it runs the ONNX files the repository's records vouch for."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from audit_chain_builder import cfxray

from cfxray.lineage import read_lineage, write_lineage

MODELS = ("classifier", "explain", "generator_n2p", "generator_p2n")


def audit_json(capsys, *argv) -> tuple[int, dict]:
    capsys.readouterr()
    code = cfxray("audit", *argv, "--json")
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_served_versions_are_probed_and_traced(triton_server, serving_repo, capsys):
    url = triton_server.endpoints["http"]
    code, report = audit_json(capsys, "--url", url, "--model-repo", serving_repo)
    assert report["served"]["ready"] == [f"{m}/1" for m in MODELS]
    assert [m["name"] for m in report["models"]] == [f"{m}/1" for m in MODELS]
    for model in report["models"]:
        assert "ok served model answers a fixed probe exactly as model.onnx does" in \
            model["status"]
    # The serving fixture's random-weight checkpoints were made without lineage records:
    # the audit must say so rather than pass.
    assert code == 1
    assert any(p["link"] == "classifier/1 -> classifier"
               and "lineage record missing" in p["message"] for p in report["problems"])
    assert not any("probe" in p["message"] for p in report["problems"])


@pytest.mark.slow
def test_server_running_another_model_than_the_recorded_file_is_caught(
        triton_server, serving_repo, tmp_path, capsys):
    import onnx
    from onnx import numpy_helper

    other = tmp_path / "model_repository"  # same names and tensors, other weights
    shutil.copytree(serving_repo, other)
    version = other / "classifier" / "1"
    model = onnx.load(version / "model.onnx")
    weights = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    perturbed = numpy_helper.to_array(weights) * 1.5
    weights.CopyFrom(numpy_helper.from_array(perturbed.astype(perturbed.dtype), weights.name))
    onnx.save(model, version / "model.onnx")
    record = read_lineage(version)  # the repository's own record agrees with its new file
    write_lineage(version, record["kind"], {k: v["path"] for k, v in record["inputs"].items()},
                  record["params"], record["metrics"])

    url = triton_server.endpoints["http"]
    code, report = audit_json(capsys, "--url", url, "--model-repo", other, "--model",
                              "classifier")
    assert code == 1
    (served,) = report["models"]
    assert "ok served model version sha256" in served["status"][0]  # file matches its record
    assert any(p["link"] == "classifier/1" and "answers a fixed probe differently" in
               p["message"] for p in report["problems"]), report["problems"]

    shutil.rmtree(other / "generator_p2n")
    code, report = audit_json(capsys, "--url", url, "--model-repo", other, "--model",
                              "generator_p2n")
    assert code == 1
    assert any("served by" in p["message"] and "not in the repository" in p["message"]
               for p in report["problems"])

    capsys.readouterr()
    assert cfxray("audit", "--url", url, "--model-repo", serving_repo, "--model",
                  "classifier", "--version", "7") == 2
    assert "does not serve classifier version 7" in capsys.readouterr().err
