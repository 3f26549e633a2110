"""A small published project for the audit tests: phantom data under DVC in a git repo,
preprocessed, two classifiers and an oracle trained by the real `cfxray` steps, then
CycleGAN, evaluation and export artifacts, and two published versions.
"""

from __future__ import annotations

import contextlib
import json
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


def cfxray(*argv: str) -> int:
    from cfxray.cli import main

    return main([str(a) for a in argv])


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def _dvc(root: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, check=True,
                   capture_output=True)


def _fake_cyclegan(out: Path, data: Path, classifier: Path, oracle: Path) -> None:
    """The CycleGAN step's output contract (generators.pt + lineage) without training one."""
    import torch

    from cfxray.lineage import write_lineage

    out.mkdir(parents=True)
    torch.save({"n2p": torch.arange(8.0), "p2n": -torch.arange(8.0)}, out / "generators.pt")
    write_lineage(out, "cyclegan", inputs={"data": data, "classifier": classifier,
                                           "oracle": oracle},
                  params={"epochs": 1, "gamma_counter": 1.0, "lambda_cycle": 10.0},
                  metrics={"val_flip_rate_n2p": 0.8, "val_flip_rate_p2n": 0.75})


def _fake_evaluation(out: Path, data: Path, classifier: Path, oracle: Path,
                     generators: Path, auc: float) -> None:
    from cfxray.lineage import write_lineage

    out.mkdir(parents=True)
    metrics = {"auc": auc, "auc_ci_low": auc - 0.05, "auc_ci_high": min(1.0, auc + 0.04),
               "accuracy": {"value": 0.8, "low": 0.7, "high": 0.88},
               "counterfactual": {"flip_rate_n2p": 0.9, "flip_rate_n2p_ci_low": 0.8,
                                  "flip_rate_n2p_ci_high": 0.95, "ssim": 0.71},
               "gate": {"passed": True}}
    (out / "metrics.json").write_text(json.dumps(metrics))
    write_lineage(out, "evaluation", inputs={"data": data, "classifier": classifier,
                                             "oracle": oracle, "generators": generators},
                  params={"bootstrap": 200}, metrics=metrics)


def _fake_export(repo: Path, version: int, classifier: Path, generators: Path,
                 evaluation: Path, stride: int) -> None:
    from cfxray.lineage import write_lineage

    for name in ("classifier", "generator_n2p"):
        folder = repo / name / str(version)
        folder.mkdir(parents=True)
        (repo / name / "config.pbtxt").write_text(f'name: "{name}"\nbackend: "onnxruntime"\n')
        (folder / "model.onnx").write_bytes(os.urandom(256))
        write_lineage(folder, f"serving/{name}",
                      inputs={"classifier": classifier, "generators": generators,
                              "evaluation": evaluation},
                      params={"image_size": 32, "stride": stride}, metrics={},
                      extra={"model": name, "version": version})


def build_project(root: Path) -> Project:
    import torch

    torch.set_num_threads(1)
    p = Project(root=root, repo=root / "model_repository", raw=root / "data" / "phantom",
                prepared=root / "data" / "prepared", classifier=root / "models" / "classifier",
                classifier2=root / "models" / "classifier2", oracle=root / "models" / "oracle",
                cyclegan=root / "models" / "cyclegan", cyclegan2=root / "models" / "cyclegan2",
                evaluation=root / "reports" / "eval")
    root.mkdir(parents=True, exist_ok=True)
    old = Path.cwd()
    os.chdir(root)
    try:
        _git(root, "init", "-q")
        _git(root, "config", "user.email", "audit@test")
        _git(root, "config", "user.name", "audit test")
        _dvc(root, "init", "-q")
        assert cfxray("data", "phantom", "--params", PARAMS, "--out", p.raw, "--n", 48,
                      "--size", 32, "--seed", 3, "--workers", 1) == 0
        _dvc(root, "add", "-q", "data/phantom")
        _git(root, "add", "-A")
        _git(root, "commit", "-q", "-m", "phantom data")
        assert cfxray("data", "preprocess", p.raw, "--params", PARAMS, "--out", p.prepared,
                      "--size", 32) == 0
        train = ("train-classifier", "--params", PARAMS, "--data", p.prepared, "--epochs", 1,
                 "--batch-size", 16, "--arch", "smallcnn")
        assert cfxray(*train, "--out", p.classifier) == 0
        assert cfxray(*train, "--out", p.classifier2, "--lr", 0.01, "--seed", 7) == 0
        assert cfxray(*train, "--out", p.oracle, "--seed", 99) == 0
        _fake_cyclegan(p.cyclegan, p.prepared, p.classifier / "classifier.pt",
                       p.oracle / "classifier.pt")
        _fake_evaluation(p.evaluation, p.prepared, p.classifier / "classifier.pt",
                         p.oracle / "classifier.pt", p.cyclegan, auc=0.83)
        _fake_export(p.repo, 1, p.classifier / "classifier.pt", p.cyclegan, p.evaluation, 4)
        _fake_cyclegan(p.cyclegan2, p.prepared, p.classifier2 / "classifier.pt",
                       p.oracle / "classifier.pt")
        eval2 = root / "reports" / "eval2"
        _fake_evaluation(eval2, p.prepared, p.classifier2 / "classifier.pt",
                         p.oracle / "classifier.pt", p.cyclegan2, auc=0.9)
        _fake_export(p.repo, 2, p.classifier2 / "classifier.pt", p.cyclegan2, eval2, 4)
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
