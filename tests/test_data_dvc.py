"""The repository's DVC data stages, run by real DVC in a temporary git repository.

The temporary repo gets the project's own `phantom` and `preprocess` stages, the code files
they depend on, the project's `.dvc/config` (default remote) and tiny parameters.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cfxray.data.tensors import load_meta, load_split
from cfxray.lineage import read_lineage, sha256_tree

REPO = Path(__file__).resolve().parents[1]
STAGES = ("phantom", "preprocess")
PARAMS = {
    "phantom": {"n": 24, "size": 32, "seed": 2, "pneumonia_fraction": 0.5,
                "split_fractions": [0.6, 0.2, 0.2], "workers": 1, "contact_sheet": 4,
                "realism": "simple", "shortcut_rate": 0.0, "shortcut_confounding": 0.0},
    "preprocess": {"size": 24, "resize": "pad"},
}


def _env() -> dict[str, str]:
    env = dict(os.environ, DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@x",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@x", OMP_NUM_THREADS="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # `cfxray` in cmd
    return env


def _run(cwd: Path, *args: str) -> str:
    result = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def _dvc(cwd: Path, *args: str) -> str:
    return _run(cwd, sys.executable, "-m", "dvc", *args)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dvcproj") / "repo"
    root.mkdir()
    pipeline = yaml.safe_load((REPO / "dvc.yaml").read_text())
    stages = {name: pipeline["stages"][name] for name in STAGES}
    for stage in stages.values():
        for dep in stage["deps"]:
            if dep.startswith("src/"):
                (root / dep).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(REPO / dep, root / dep)
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    (root / ".gitignore").write_text("/.dvc-storage/\n")
    _run(root, "git", "init", "-q")
    _dvc(root, "init", "-q")
    shutil.copy(REPO / ".dvc" / "config", root / ".dvc" / "config")
    _run(root, "git", "add", "-A")
    _run(root, "git", "commit", "-q", "-m", "project")
    return root


def test_repro_builds_the_data_and_a_second_repro_does_nothing(project: Path) -> None:
    first = _dvc(project, "repro")
    assert "Running stage 'phantom'" in first and "Running stage 'preprocess'" in first
    meta = load_meta(project / "data" / "prepared")
    assert meta["size"] == 24 and meta["source_sha256"] == sha256_tree(project / "data/phantom")
    assert sum(len(load_split(project / "data" / "prepared", s)) for s in meta["counts"]) == 24
    assert read_lineage(project / "data" / "phantom")["context"]["dvc_stage"] == "phantom"
    lock = (project / "dvc.lock").read_text()

    second = _dvc(project, "repro")
    assert "Running stage" not in second
    assert (project / "dvc.lock").read_text() == lock
    assert "up to date" in _dvc(project, "status")


def test_push_to_default_remote_then_pull_restores_data(project: Path) -> None:
    _dvc(project, "repro")
    before = sha256_tree(project / "data" / "prepared")
    _dvc(project, "push")
    assert any((project / ".dvc-storage").rglob("*"))
    shutil.rmtree(project / "data")
    shutil.rmtree(project / ".dvc" / "cache")
    _dvc(project, "pull")
    assert sha256_tree(project / "data" / "prepared") == before
    assert "up to date" in _dvc(project, "status")


def test_clean_clone_rebuilds_with_repro(project: Path, tmp_path: Path) -> None:
    _dvc(project, "repro")
    _run(project, "git", "add", "dvc.lock")
    _run(project, "git", "commit", "-q", "-m", "lock", "--allow-empty")
    clone = tmp_path / "clone"
    _run(tmp_path, "git", "clone", "-q", str(project), str(clone))
    _dvc(clone, "repro")
    assert (clone / "data" / "prepared" / "train.pt").exists()
    assert (sha256_tree(clone / "data" / "phantom")
            == sha256_tree(project / "data" / "phantom"))  # deterministic phantom


def test_param_change_reruns_only_what_depends_on_it(project: Path) -> None:
    """Runs last: it leaves the project with changed parameters."""
    _dvc(project, "repro")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["preprocess"]["size"] = 16
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    out = _dvc(project, "repro")
    assert "Running stage 'preprocess'" in out and "Running stage 'phantom'" not in out
    assert load_meta(project / "data" / "prepared")["size"] == 16
