"""Shared test fixtures. Add yours with a small edit; never replace others'."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The DVC repositories tests create have no config of their own: keep DVC from starting its
# analytics daemon (which would try to reach the internet) in any of them.
os.environ["DVC_NO_ANALYTICS"] = "1"


def make_blob_split(n: int, size: int, seed: int, pneumonia_fraction: float = 0.35):
    """A tiny SplitData where PNEUMONIA images carry one bright Gaussian blob (an easy task)."""
    import torch

    from cfxray.data.tensors import SplitData

    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, generator=g) < pneumonia_fraction).long()
    labels[:2] = torch.tensor([0, 1])  # both classes, whatever the draw
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images = 0.35 + 0.1 * torch.rand(n, size, size, generator=g)
    centres = torch.randint(size // 4, 3 * size // 4, (n, 2), generator=g)
    for i in torch.nonzero(labels).flatten().tolist():
        cy, cx = centres[i].tolist()
        images[i] += 0.35 * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (size / 10) ** 2))
    return SplitData(images=(images.clamp(0, 1) * 255).to(torch.uint8), labels=labels,
                     files=[f"img{i}.png" for i in range(n)],
                     patient_ids=[f"p{i}" for i in range(n)])


@pytest.fixture(scope="session")
def blob_data(tmp_path_factory) -> Path:
    """Prepared-data folder (train/val/test .pt, 32 px) for fast training tests."""
    from cfxray.data.tensors import save_split

    root = tmp_path_factory.mktemp("blob_data")
    for k, (split, n) in enumerate([("train", 96), ("val", 40), ("test", 40)]):
        save_split(make_blob_split(n, 32, seed=k), root, split)
    return root


@pytest.fixture(scope="session")
def audit_project(tmp_path_factory):
    """A small published project (DVC-tracked phantom data, real training runs, two exported
    versions) for the audit tests; see tests/audit_chain_builder.py."""
    from audit_chain_builder import build_project

    return build_project(tmp_path_factory.mktemp("audit") / "project")


@pytest.fixture(scope="session")
def serving_repo(tmp_path_factory) -> Path:
    """A Triton repository exported by `cfxray export` from tiny random-weight models (32 px)."""
    from serving_support import make_checkpoints, write_params

    from cfxray.cli import main

    root = tmp_path_factory.mktemp("serving")
    classifier, generators = make_checkpoints(root / "models")
    repo = root / "model_repository"
    argv = ["export", "--classifier", str(classifier), "--generators", str(generators),
            "--out", str(repo), "--params", str(write_params(root / "params.yaml"))]
    assert main(argv) == 0
    return repo


@pytest.fixture(scope="session")
def triton_server(serving_repo):
    """One real Triton server (bundled with nvidia-pytriton) on free loopback ports."""
    from cfxray.serving.triton import LocalTritonServer, Ports, free_ports

    with LocalTritonServer(serving_repo, Ports(*free_ports(3))) as server:
        yield server


@pytest.fixture(scope="session")
def study_project(tmp_path_factory):
    """A tiny published version (trained classifier, exported ONNX, complete lineage) for the
    reader-study tests; see tests/study_builder.py."""
    from study_builder import build_study_project

    return build_study_project(tmp_path_factory.mktemp("study") / "project")
