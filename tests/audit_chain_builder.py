"""A small published project for the audit tests, made by the real `cfxray` steps: phantom
data under DVC in a git repo, preprocessed, two classifiers and an oracle, a CycleGAN and an
evaluation for each classifier, and two versions published by `cfxray export`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


@dataclass
class Project:
    root: Path
    repo: Path  # model_repository
    raw: Path
    prepared: Path
    classifier: Path  # the run folder (classifier.pt inside)
    classifier2: Path
    oracle: Path
    cyclegan: Path
    cyclegan2: Path
    evaluation: Path
    evaluation2: Path


def cfxray(*argv: str) -> int:
    from cfxray.cli import main

    return main([str(a) for a in argv])


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def _dvc(root: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, check=True,
                   capture_output=True)


def small_params(root: Path) -> Path:
    """The project's params.yaml with evaluation settings sized for a 48-image dataset and
    the quality gate off (a 1-epoch CycleGAN cannot pass it; the gate has its own tests)."""
    import yaml

    params = yaml.safe_load(PARAMS.read_text())
    params["evaluate"].update(bootstrap_resamples=50, kid_subsets=2, kid_subset_size=4,
                              max_reference_images=16, report_cases=1)
    params["evaluate"]["gate"] = {key: None for key in params["evaluate"]["gate"]}
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def _train_cyclegan(params: Path, data: Path, classifier: Path, oracle: Path, out: Path) -> None:
    assert cfxray("train-cyclegan", "--params", params, "--data", data, "--classifier",
                  classifier, "--oracle", oracle, "--out", out, "--epochs", 1,
                  "--decay-epochs", 0, "--ngf", 8, "--n-blocks", 1, "--ndf", 8,
                  "--d-layers", 2) == 0


def _evaluate(params: Path, data: Path, classifier: Path, oracle: Path, generators: Path,
              out: Path) -> None:
    assert cfxray("evaluate", "--params", params, "--data", data, "--classifier", classifier,
                  "--oracle", oracle, "--generators", generators, "--out", out) == 0


def export(params: Path, classifier: Path, generators: Path, evaluation: Path,
           repo: Path) -> None:
    assert cfxray("export", "--params", params, "--classifier", classifier, "--generators",
                  generators, "--evaluation", evaluation, "--out", repo) == 0


def build_project(root: Path) -> Project:
    """Real steps from phantom data to evaluation; version 2 retrains the classifier (other
    lr and seed) and everything downstream of it."""
    import torch

    torch.set_num_threads(1)
    p = Project(root=root, repo=root / "model_repository", raw=root / "data" / "phantom",
                prepared=root / "data" / "prepared", classifier=root / "models" / "classifier",
                classifier2=root / "models" / "classifier2", oracle=root / "models" / "oracle",
                cyclegan=root / "models" / "cyclegan", cyclegan2=root / "models" / "cyclegan2",
                evaluation=root / "reports" / "eval", evaluation2=root / "reports" / "eval2")
    root.mkdir(parents=True, exist_ok=True)
    old = Path.cwd()
    os.chdir(root)
    try:
        _git(root, "init", "-q")
        _git(root, "config", "user.email", "audit@test")
        _git(root, "config", "user.name", "audit test")
        _dvc(root, "init", "-q")
        params = small_params(root)
        assert cfxray("data", "phantom", "--params", params, "--out", p.raw, "--n", 48,
                      "--size", 32, "--seed", 3, "--workers", 1) == 0
        _dvc(root, "add", "-q", "data/phantom")
        _git(root, "add", "-A")
        _git(root, "commit", "-q", "-m", "phantom data")
        assert cfxray("data", "preprocess", p.raw, "--params", params, "--out", p.prepared,
                      "--size", 32) == 0
        train = ("train-classifier", "--params", params, "--data", p.prepared, "--epochs", 1,
                 "--batch-size", 16, "--arch", "smallcnn")
        assert cfxray(*train, "--out", p.classifier) == 0
        assert cfxray(*train, "--out", p.classifier2, "--lr", 0.01, "--seed", 7) == 0
        assert cfxray(*train, "--out", p.oracle, "--seed", 99) == 0
        oracle = p.oracle / "classifier.pt"
        for classifier, cyclegan, evaluation, version in (
                (p.classifier, p.cyclegan, p.evaluation, 1),
                (p.classifier2, p.cyclegan2, p.evaluation2, 2)):
            _train_cyclegan(params, p.prepared, classifier / "classifier.pt", oracle, cyclegan)
            _evaluate(params, p.prepared, classifier / "classifier.pt", oracle, cyclegan,
                      evaluation)
            export(params, classifier / "classifier.pt", cyclegan, evaluation, p.repo)
            assert (p.repo / "explain" / str(version)).is_dir()
    finally:
        os.chdir(old)
    return p


@contextlib.contextmanager
def changed(path: Path, new_bytes: bytes | None = None) -> Iterator[Path]:
    """Temporarily replace a file's bytes (None: flip one byte in the middle) or delete it."""
    original = path.read_bytes()
    if new_bytes is None:
        data = bytearray(original)
        data[len(data) // 2] ^= 0x01
        new_bytes = bytes(data)
    try:
        path.write_bytes(new_bytes)
        yield path
    finally:
        path.write_bytes(original)


@contextlib.contextmanager
def removed(path: Path) -> Iterator[Path]:
    original = path.read_bytes()
    try:
        path.unlink()
        yield path
    finally:
        path.write_bytes(original)


@contextlib.contextmanager
def moved(path: Path, to: Path) -> Iterator[Path]:
    """Temporarily move a file or folder elsewhere (a published version gone, a project
    relocated); it is put back whatever the test does."""
    to.parent.mkdir(parents=True, exist_ok=True)
    os.rename(path, to)
    try:
        yield to
    finally:
        os.rename(to, path)
