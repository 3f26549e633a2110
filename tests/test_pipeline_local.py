"""The whole Kubeflow pipeline, run for real with kfp.local's SubprocessRunner on a tiny
DVC-tracked phantom dataset in a temporary git repository: a passing gate publishes a new
model version, a failing gate skips the export."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cfxray.contract import MODEL_NAMES
from cfxray.evaluation.gate import CRITERIA
from cfxray.lineage import read_lineage

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
# Tiny everything: 32 px, one short epoch per trainer, a one-block generator.
TINY = [
    "preprocess.size=32",
    "train_classifier.arch=smallcnn", "train_classifier.epochs=1",
    "train_classifier.batch_size=16",
    "train_oracle.epochs=1", "train_oracle.batch_size=16",
    "train_cyclegan.epochs=1", "train_cyclegan.decay_epochs=0", "train_cyclegan.ngf=8",
    "train_cyclegan.n_blocks=1", "train_cyclegan.ndf=8", "train_cyclegan.d_layers=2",
    "train_cyclegan.sample_count=2",
    "evaluate.bootstrap_resamples=20", "evaluate.max_reference_images=40",
    "evaluate.kid_subset_size=4", "evaluate.kid_subsets=2",
]
OPEN_GATE = [f"evaluate.gate.{c}=null" for c in CRITERIA]  # every criterion disabled
IMPOSSIBLE_GATE = [*OPEN_GATE, "evaluate.gate.min_ssim=1.5"]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture(scope="module")
def data_repo(tmp_path_factory) -> tuple[Path, str]:
    """A git + DVC repository holding a 60-image, 32 px phantom dataset; (path, commit)."""
    repo = tmp_path_factory.mktemp("data_repo")
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "ci@example.org")
    git(repo, "config", "user.name", "ci")
    bin_dir = Path(sys.executable).parent
    subprocess.run([bin_dir / "dvc", "init", "-q"], cwd=repo, check=True)
    subprocess.run([sys.executable, "-m", "cfxray.cli", "data", "phantom", "--out",
                    "data/phantom", "--n", "60", "--size", "32", "--seed", "3",
                    "--params", str(ROOT / "params.yaml")], cwd=repo, check=True,
                   capture_output=True)
    subprocess.run([bin_dir / "dvc", "add", "-q", "data/phantom"], cwd=repo, check=True)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "phantom data")
    return repo, git(repo, "rev-parse", "HEAD")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """One pipeline root and step cache for the module's runs: a later run reuses the
    training of an earlier one with the same data and training parameters."""
    return tmp_path_factory.mktemp("pipeline")


def run_pipeline(workspace: Path, repo: Path, rev: str, sets: list[str],
                 model_repo: Path) -> tuple[int, str, Path]:
    """`cfxray pipeline run --local --cache` as a user runs it; (exit status, its output,
    the run's folder)."""
    argv = [sys.executable, "-m", "cfxray.cli", "pipeline", "run", "--local", "--cache",
            "--params", str(ROOT / "params.yaml"), "--data-repo", str(repo), "--data-rev", rev,
            "--root", str(workspace / "root"), "--model-repo", str(model_repo),
            *[item for s in [*TINY, *sets] for item in ("--set", s)]]
    result = subprocess.run(argv, cwd=workspace, capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    out = result.stdout + result.stderr
    found = re.search(r"^pipeline run: (\S+)$", out, re.M)
    assert found, out[-3000:]
    return result.returncode, out, Path(found.group(1))


@pytest.fixture(scope="module")
def failing_run(data_repo, workspace) -> tuple[int, str, Path, Path]:
    repo, commit = data_repo
    model_repo = workspace / "failing_model_repository"
    return (*run_pipeline(workspace, repo, commit, IMPOSSIBLE_GATE, model_repo), model_repo)


def test_failing_gate_skips_the_export(failing_run):
    code, out, run_dir, model_repo = failing_run
    assert code == 1, out[-3000:]
    assert "quality gate failed: export skipped" in out
    tasks = {p.name for p in run_dir.iterdir() if p.is_dir()}
    assert {"locate-data", "fetch-data", "split-params", "preprocess", "train-classifier",
            "train-classifier-2", "train-cyclegan", "evaluate"} <= tasks
    assert not any(t.startswith("export") for t in tasks)
    assert not model_repo.exists()
    evaluate = json.loads((run_dir / "evaluate" / "executor_output.json").read_text())
    assert evaluate["parameterValues"]["Output"] is False
    metrics = json.loads((run_dir / "evaluate" / "evaluation" / "metrics.json").read_text())
    assert metrics["gate/passed"] == 0.0
    report = out[out.index("pipeline run: "):]
    for name, task, artifact in [
            ("raw_data", "fetch-data", "dataset"), ("prepared_data", "preprocess", "prepared"),
            ("classifier", "train-classifier", "classifier"),
            ("oracle", "train-classifier-2", "classifier"),
            ("generators", "train-cyclegan", "generators"),
            ("evaluation", "evaluate", "evaluation"), ("report", "evaluate", "report")]:
        assert re.search(rf"^  {name} +{re.escape(str(run_dir / task / artifact))}$", report,
                         re.M), name


def test_fetched_dataset_records_its_dvc_hash_and_revision(failing_run, data_repo):
    repo, commit = data_repo
    md5 = (repo / "data" / "phantom.dvc").read_text().split("md5: ")[1].split()[0]
    run_dir = failing_run[2]
    fetch = json.loads((run_dir / "fetch-data" / "executor_output.json").read_text())
    (dataset,) = fetch["artifacts"]["dataset"]["artifacts"]
    assert dataset["metadata"]["dvc_md5"] == md5
    assert dataset["metadata"]["dvc_rev"] == commit
    record = read_lineage(dataset["uri"])
    assert record["dvc"]["md5"] == md5 and record["dvc"]["rev"] == commit
    assert record["dvc"]["repo_url"] == str(repo)


def test_evaluation_feeds_the_kubeflow_ui_artifacts(failing_run):
    run_dir = failing_run[2]
    outputs = json.loads((run_dir / "evaluate" / "executor_output.json").read_text())["artifacts"]
    metrics = json.loads((run_dir / "evaluate" / "evaluation" / "metrics.json").read_text())
    (logged,) = outputs["metrics"]["artifacts"]
    assert logged["metadata"]["n2p/ssim"] == pytest.approx(metrics["n2p/ssim"])
    (classification,) = outputs["classification"]["artifacts"]
    matrix = [row["row"] for row in classification["metadata"]["confusionMatrix"]["rows"]]
    assert sum(map(sum, matrix)) == metrics["classifier/n_images"]
    roc = classification["metadata"]["confidenceMetrics"]
    assert roc[0]["falsePositiveRate"] == 0 and roc[-1]["recall"] == 1
    (report,) = outputs["report"]["artifacts"]
    html = Path(report["uri"]).read_text()
    assert html == (run_dir / "evaluate" / "evaluation" / "report.html").read_text()


def test_passing_gate_publishes_a_new_model_version(data_repo, workspace):
    repo, commit = data_repo
    model_repo = workspace / "model_repository"
    code, out, run_dir = run_pipeline(workspace, repo, commit, OPEN_GATE, model_repo)
    assert code == 0, out[-3000:]
    publication = json.loads(
        (run_dir / "export-model" / "published" / "publication.json").read_text())
    assert publication["version"] == 1
    assert publication["model_repository"] == str(model_repo)
    assert sorted(publication["models"]) == sorted(MODEL_NAMES)
    for name in MODEL_NAMES:
        version_dir = model_repo / name / "1"
        assert (version_dir / "model.onnx").is_file()
        assert (model_repo / name / "config.pbtxt").is_file()
    assert f"published version 1 to {model_repo}" in out
