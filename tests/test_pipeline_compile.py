"""The Kubeflow pipeline compiles, its committed IR is current, and its structure is right."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cfxray.cli import main

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "pipelines" / "cfxray_pipeline.yaml"


def load_spec(path: Path) -> dict:
    """The pipeline spec: the first YAML document (the second is the Kubernetes platform)."""
    return next(yaml.safe_load_all(path.read_text()))


def platform_spec(path: Path) -> dict:
    return list(yaml.safe_load_all(path.read_text()))[1]["platforms"]["kubernetes"]


def compile_fresh(out: Path, **env: str) -> dict:
    """Compile in a fresh interpreter (the image name is read when components are defined)."""
    clean = {k: v for k, v in os.environ.items() if k != "CFXRAY_IMAGE"}
    subprocess.run([sys.executable, "-m", "cfxray.cli", "pipeline", "compile", "--out", str(out)],
                   cwd=ROOT, env={**clean, **env}, check=True, capture_output=True)
    return load_spec(out)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("compiled") / "pipeline.yaml"
    return out, compile_fresh(out)


def test_committed_pipeline_is_current(compiled):
    out, _ = compiled
    assert COMMITTED.read_text() == out.read_text(), (
        "pipelines/cfxray_pipeline.yaml is stale: run `cfxray pipeline compile`")


def test_compile_writes_where_asked(tmp_path, capsys):
    out = tmp_path / "nested" / "p.yaml"
    assert main(["pipeline", "compile", "--out", str(out)]) == 0
    assert "cfxray" in capsys.readouterr().out
    assert load_spec(out)["pipelineInfo"]["name"] == "cfxray"


def _executors(spec: dict) -> dict:
    return spec["deploymentSpec"]["executors"]


def _all_tasks(spec: dict) -> dict:
    tasks = dict(spec["root"]["dag"]["tasks"])
    for component in spec["components"].values():
        tasks.update((component.get("dag") or {}).get("tasks") or {})
    return tasks


def test_every_step_is_a_component_in_the_project_image(compiled):
    _, spec = compiled
    tasks = _all_tasks(spec)
    steps = {t["componentRef"]["name"].removeprefix("comp-") for t in tasks.values()}
    assert {"locate-data", "fetch-data", "split-params", "preprocess", "train-classifier", "train-cyclegan",
            "evaluate", "export-model"} <= steps
    for name, executor in _executors(spec).items():
        container = executor["container"]
        assert container["image"] == "cfxray:0.1.0", name
        body = container["command"][-1]
        assert "from cfxray.pipeline import steps" in body, name
        assert "pip install" not in " ".join(container["command"]), name  # kfp is in the image


def test_image_name_is_configurable(tmp_path):
    spec = compile_fresh(tmp_path / "p.yaml", CFXRAY_IMAGE="registry.example/cfxray:test")
    assert {e["container"]["image"] for e in _executors(spec).values()} == {
        "registry.example/cfxray:test"}


def test_classifier_and_oracle_share_one_component_with_other_sections(compiled):
    _, spec = compiled
    tasks = _all_tasks(spec)
    sections = sorted(t["inputs"]["parameters"]["section"]["runtimeValue"]["constant"]
                      for t in tasks.values()
                      if t["componentRef"]["name"].startswith("comp-train-classifier"))
    assert sections == ["train_classifier", "train_oracle"]


def test_training_requests_gpu_cpu_memory_and_retries(compiled):
    _, spec = compiled
    tasks = _all_tasks(spec)
    training = [name for name, t in tasks.items() if t["componentRef"]["name"].startswith(
        ("comp-train-classifier", "comp-train-cyclegan"))]
    assert len(training) == 3
    for name in training:
        resources = _executors(spec)[f"exec-{name}"]["container"]["resources"]
        assert "gpus_per_training_task" in resources["accelerator"]["resourceCount"]
        assert "accelerator_type" in resources["accelerator"]["resourceType"]
        assert {"resourceCpuRequest", "resourceCpuLimit", "resourceMemoryRequest",
                "resourceMemoryLimit"} <= set(resources)
        assert tasks[name]["retryPolicy"]["maxRetryCount"] >= 1
        assert tasks[name]["cachingOptions"]["enableCache"] is True


def test_export_runs_only_when_the_gate_passes(compiled):
    _, spec = compiled
    root_tasks = spec["root"]["dag"]["tasks"]
    conditions = {name: t["triggerPolicy"]["condition"] for name, t in root_tasks.items()
                  if t.get("triggerPolicy", {}).get("condition")}
    assert len(conditions) == 1
    (name, condition), = conditions.items()
    assert "evaluate-Output" in condition and "true" in condition
    inner = spec["components"][root_tasks[name]["componentRef"]["name"]]["dag"]["tasks"]
    assert [t["componentRef"]["name"] for t in inner.values()] == ["comp-export-model"]
    assert "export-model" not in root_tasks
    assert inner["export-model"]["cachingOptions"].get("enableCache") is not True


def test_evaluation_outputs_are_typed_for_the_kubeflow_ui(compiled):
    _, spec = compiled
    outputs = spec["components"]["comp-evaluate"]["outputDefinitions"]
    kinds = {name: a["artifactType"]["schemaTitle"] for name, a in outputs["artifacts"].items()}
    assert kinds == {"evaluation": "system.Artifact", "metrics": "system.Metrics",
                     "classification": "system.ClassificationMetrics", "report": "system.HTML"}
    assert outputs["parameters"]["Output"]["parameterType"] == "BOOLEAN"


def test_cluster_settings_mount_the_model_repository_and_dvc_credentials(compiled):
    out, spec = compiled
    platform = platform_spec(out)["deploymentSpec"]["executors"]
    assert platform["exec-export-model"]["pvcMount"][0]["mountPath"] == "/mnt/model-repository"
    for name in ("exec-locate-data", "exec-fetch-data"):
        secret = platform[name]["secretAsEnv"][0]
        assert secret["optional"] is True
    for name in ("exec-train-classifier", "exec-train-cyclegan"):
        assert platform[name]["tolerations"][0]["key"] == "nvidia.com/gpu"
    defaults = {k: v.get("defaultValue") for k, v in
                spec["root"]["inputDefinitions"]["parameters"].items()}
    assert defaults["model_repository"] == "/mnt/model-repository"
    assert "data_repo_url" in defaults and defaults["data_repo_url"] is None  # required


def test_library_does_not_import_kfp():
    code = ("import sys, cfxray.cli, cfxray.pipeline.commands, cfxray.pipeline.steps; "
            "cfxray.cli.build_parser(); print('kfp' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == "False"
