"""What the pipeline's components do inside their container (`cfxray.pipeline.steps`), on a
real git + DVC repository in a temporary folder and on small hand-made evaluation outputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cfxray.errors import UserError
from cfxray.lineage import dvc_md5_tree, read_lineage, write_lineage
from cfxray.pipeline import steps


def sh(repo: Path, *cmd: str) -> str:
    return subprocess.run(list(cmd), cwd=repo, check=True, capture_output=True,
                          text=True).stdout.strip()


def make_repo(repo: Path) -> Path:
    """A git + DVC repository tracking data/raw (two files) with `dvc add`, committed."""
    (repo / "data" / "raw" / "train").mkdir(parents=True)
    sh(repo, "git", "init", "-q")
    sh(repo, "git", "config", "user.email", "ci@example.org")
    sh(repo, "git", "config", "user.name", "ci")
    dvc = str(Path(sys.executable).parent / "dvc")
    sh(repo, dvc, "init", "-q")
    (repo / "data" / "raw" / "train" / "a.png").write_bytes(b"first image")
    (repo / "data" / "raw" / "manifest.csv").write_text("file,label\n")
    sh(repo, dvc, "add", "-q", "data/raw")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-q", "-m", "data v1")
    return repo


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """Shared by the tests that only read it."""
    return make_repo(tmp_path_factory.mktemp("shared") / "repo")


@pytest.fixture
def fresh_repo(tmp_path) -> Path:
    """For the tests that change the data."""
    return make_repo(tmp_path / "repo")


def dvc_md5(repo: Path) -> str:
    return yaml.safe_load((repo / "data" / "raw.dvc").read_text())["outs"][0]["md5"]


def test_fetch_at_a_commit_verifies_and_records_the_dvc_hash(repo, tmp_path):
    commit = sh(repo, "git", "rev-parse", "HEAD")
    resolved, md5 = steps.locate_dvc_dataset(str(repo), "HEAD", "data/raw")
    assert (resolved, md5) == (commit, dvc_md5(repo))
    out = tmp_path / "fetched"
    source = steps.fetch_dvc_dataset(str(repo), resolved, "data/raw", md5, out)
    assert (out / "train" / "a.png").read_bytes() == b"first image"
    assert source["rev"] == commit and source["md5"] == md5 and source["workspace"] is False
    assert read_lineage(out)["dvc"] == source


def test_a_pinned_commit_reads_that_version_after_the_data_changed(fresh_repo, tmp_path):
    repo = fresh_repo
    old_commit, old_md5 = steps.locate_dvc_dataset(str(repo), "HEAD", "data/raw")
    (repo / "data" / "raw" / "train" / "a.png").write_bytes(b"second image")
    dvc = str(Path(sys.executable).parent / "dvc")
    sh(repo, dvc, "add", "-q", "data/raw")
    sh(repo, "git", "commit", "-q", "-am", "data v2")
    new_commit, new_md5 = steps.locate_dvc_dataset(str(repo), "HEAD", "data/raw")
    assert new_commit != old_commit and new_md5 != old_md5
    steps.fetch_dvc_dataset(str(repo), old_commit, "data/raw", old_md5, tmp_path / "old")
    assert (tmp_path / "old" / "train" / "a.png").read_bytes() == b"first image"


def test_working_tree_is_read_without_a_revision(repo, tmp_path):
    commit, md5 = steps.locate_dvc_dataset(str(repo), "", "data/raw")
    assert commit == ""  # the working tree: the download is keyed on the DVC hash alone
    source = steps.fetch_dvc_dataset(str(repo), "", "data/raw", md5, tmp_path / "out")
    assert source["workspace"] is True
    assert source["rev"] == sh(repo, "git", "rev-parse", "HEAD")


def test_uncommitted_data_changes_are_refused(fresh_repo, tmp_path):
    repo = fresh_repo
    _, md5 = steps.locate_dvc_dataset(str(repo), "", "data/raw")
    (repo / "data" / "raw" / "train" / "a.png").write_bytes(b"edited, not dvc-committed")
    with pytest.raises(UserError, match="dvc commit"):
        steps.fetch_dvc_dataset(str(repo), "", "data/raw", md5, tmp_path / "out")


def test_changed_data_since_located_is_refused(repo, tmp_path):
    with pytest.raises(UserError, match="expected DVC hash"):
        steps.fetch_dvc_dataset(str(repo), "HEAD", "data/raw", "0" * 32 + ".dir",
                                tmp_path / "out")


@pytest.mark.parametrize(("path", "message"), [
    ("data/missing", "not found"),
    ("data/raw.dvc", "not tracked by DVC"),  # in git, not a DVC output
])
def test_untracked_or_missing_dataset_is_a_clear_error(repo, path, message):
    with pytest.raises(UserError, match=message):
        steps.locate_dvc_dataset(str(repo), "HEAD", path)


def test_a_stage_output_never_reproduced_says_to_run_dvc_repro(fresh_repo):
    (fresh_repo / "dvc.yaml").write_text(
        "stages:\n  make:\n    cmd: mkdir -p data/made\n    outs:\n      - data/made\n")
    with pytest.raises(UserError, match="dvc repro"):
        steps.locate_dvc_dataset(str(fresh_repo), "", "data/made")


def test_unknown_repository_or_revision_is_a_clear_error(repo, tmp_path):
    with pytest.raises(UserError, match="cannot open DVC repository"):
        steps.locate_dvc_dataset(str(repo), "no-such-branch", "data/raw")
    with pytest.raises(UserError, match="cannot open DVC repository"):
        steps.locate_dvc_dataset(str(tmp_path / "nowhere"), "HEAD", "data/raw")


def test_dvc_md5_tree_matches_dvc(repo, tmp_path):
    """The check the fetch relies on: our hash of a directory equals DVC's."""
    assert dvc_md5_tree(repo / "data" / "raw") == dvc_md5(repo)


# --- params per step -----------------------------------------------------------------------------


def test_each_step_gets_only_the_sections_it_reads(tmp_path):
    params = {"preprocess": {"size": 32}, "train_classifier": {"epochs": 1},
              "train_oracle": {"epochs": 2}, "evaluate": {"gate": {"min_ssim": None}},
              "export": {"max_batch_size": 8}, "phantom": {"n": 60}, "pipeline": {}}
    per_step = {k: yaml.safe_load(v) for k, v in steps.step_params(yaml.safe_dump(params)).items()}
    assert per_step["preprocess"] == {"preprocess": {"size": 32}}
    assert per_step["train_oracle"] == {"train_oracle": {"epochs": 2}}
    assert per_step["train_cyclegan"] == {}
    assert per_step["evaluate"] == {"evaluate": {"gate": {"min_ssim": None}}}
    assert per_step["export"] == {"export": {"max_batch_size": 8}, "preprocess": {"size": 32}}
    fallback = tmp_path / "params.yaml"
    fallback.write_text(yaml.safe_dump(params))
    assert steps.step_params("", fallback) == steps.step_params(yaml.safe_dump(params))
    with pytest.raises(UserError, match="mapping"):
        steps.step_params("- a list")


def test_run_cli_passes_the_params_and_fails_loudly(tmp_path):
    with pytest.raises(RuntimeError, match="exit status 2"):
        steps.run_cli(["data", "preprocess", str(tmp_path / "missing"), "--out",
                       str(tmp_path / "out")], "preprocess: {size: 32}\n")
    with pytest.raises(UserError, match="mapping"):
        steps.run_cli(["data", "preprocess"], "just text")


def test_torchrun_for_more_than_one_process():
    assert steps.cli_command(["train-cyclegan"], 1)[1:3] == ["-m", "cfxray.cli"]
    command = steps.cli_command(["train-cyclegan", "--data", "d"], 4)
    assert command[1:3] == ["-m", "torch.distributed.run"]
    assert "--nproc_per_node=4" in command
    assert command[-5:] == ["-m", "cfxray.cli", "train-cyclegan", "--data", "d"]


# --- evaluation outputs for the Kubeflow UI ------------------------------------------------------


def test_gate_verdict_must_agree_with_the_exit_status():
    assert steps.gate_passed({"gate/passed": 1.0}, 0) is True
    assert steps.gate_passed({"gate_passed": False}, 1) is False
    with pytest.raises(RuntimeError, match="exited 1"):
        steps.gate_passed({"gate/passed": 1.0}, 1)
    with pytest.raises(RuntimeError, match="no gate verdict"):
        steps.gate_passed({"auc": 0.9}, 0)


def test_roc_confusion_and_scalars_from_the_evaluation_folder(tmp_path):
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "roc.csv").write_text("fpr,tpr,threshold\n0,0,1\n0.5,1,0.4\n1,1,0\n")
    (plots / "confusion.csv").write_text(
        "actual,predicted\nNORMAL,NORMAL\nNORMAL,PNEUMONIA\nPNEUMONIA,PNEUMONIA\n"
        "PNEUMONIA,PNEUMONIA\nNORMAL,NORMAL\n")
    assert steps.read_roc(tmp_path) == ([0.0, 0.5, 1.0], [0.0, 1.0, 1.0], [1.0, 0.4, 0.0])
    assert steps.read_confusion_matrix(tmp_path) == [[2, 1], [0, 2]]
    scalars = steps.scalar_metrics({"auc": 0.9, "n": 3, "ci": None, "nan": float("nan"),
                                    "gate_passed": True, "name": "x"})
    assert scalars == {"auc": 0.9, "n": 3.0}


# --- publishing ----------------------------------------------------------------------------------


def test_published_version_is_the_one_the_export_added(tmp_path):
    repo = tmp_path / "model_repository"
    for name in ("classifier", "explain"):
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "config.pbtxt").write_text("")
    before = steps.repository_versions(repo)
    assert before == {"classifier": {1}, "explain": {1}}
    for name in ("classifier", "explain"):
        (repo / name / "2").mkdir()
    assert steps.published_version(before, steps.repository_versions(repo)) == 2
    write_lineage(repo / "classifier" / "2", "onnx_model", inputs={}, params={})
    record = steps.write_publication(tmp_path / "published", repo, 2)
    assert record["models"] == {"classifier": str(repo.resolve() / "classifier" / "2"),
                                "explain": str(repo.resolve() / "explain" / "2")}
    assert record["sha256"] == {"classifier": read_lineage(repo / "classifier" / "2")["sha256"]}
    with pytest.raises(RuntimeError, match="exactly one version"):
        steps.published_version(steps.repository_versions(repo), steps.repository_versions(repo))
