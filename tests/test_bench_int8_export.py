"""`cfxray export --int8-calibration`: int8 generators, checked against fp32, served by Triton."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cfxray.errors import UserError

GENERATORS = ("generator_p2n", "generator_n2p")


def _op_types(path: Path) -> set[str]:
    import onnx

    return {n.op_type for n in onnx.load(str(path)).graph.node}


@pytest.fixture(scope="module")
def int8_repo(tmp_path_factory, blob_data) -> Path:
    from serving_support import make_checkpoints, write_params

    from cfxray.cli import main

    root = tmp_path_factory.mktemp("int8")
    classifier, generators = make_checkpoints(root / "models")
    repo = root / "model_repository"
    argv = ["export", "--classifier", str(classifier), "--generators", str(generators),
            "--out", str(repo), "--params", str(write_params(root / "params.yaml")),
            "--int8-calibration", str(blob_data)]
    assert main(argv) == 0
    return repo


def test_generators_are_int8_and_recorded(int8_repo):
    for name in GENERATORS:
        ops = _op_types(int8_repo / name / "1" / "model.onnx")
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
        metrics = json.loads((int8_repo / name / "1" / "lineage.json").read_text())["metrics"]
        assert metrics["int8"]["ssim_min"] >= 0.98
        assert metrics["int8"]["calibration_images"] >= 2
    # The classifier and the explain graph stay fp32.
    for name in ("classifier", "explain"):
        assert "QuantizeLinear" not in _op_types(int8_repo / name / "1" / "model.onnx")
        metrics = json.loads((int8_repo / name / "1" / "lineage.json").read_text())["metrics"]
        assert "int8" not in metrics


def test_int8_generator_is_served(int8_repo, blob_data):
    import onnxruntime as ort

    from cfxray.data.tensors import load_split
    from cfxray.serving.client import TritonModels
    from cfxray.serving.triton import LocalTritonServer, Ports, free_ports

    images = load_split(blob_data, "test").images[:3].numpy()
    with LocalTritonServer(int8_repo, Ports(*free_ports(3))) as server, \
            TritonModels(server.endpoints["http"]) as client:
        out, version = client.infer("generator_p2n", {"IMAGE": images}, ["COUNTERFACTUAL"])
    served = out["COUNTERFACTUAL"]
    assert version == "1" and served.shape == images.shape and served.dtype == np.float32
    assert served.min() >= 0.0 and served.max() <= 1.0
    # What Triton answers is what the published int8 file computes.
    local = ort.InferenceSession(str(int8_repo / "generator_p2n" / "1" / "model.onnx"),
                                 providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(served, local.run(None, {"IMAGE": images})[0], atol=1e-5)


def test_refused_when_ssim_bound_cannot_hold(tmp_path, blob_data):
    import torch
    from serving_support import make_checkpoints

    from cfxray.contract import GENERATOR_P2N, MODEL_SPECS
    from cfxray.export.onnx_export import export_onnx
    from cfxray.export.quantize import quantize_checked, served_images
    from cfxray.export.wrappers import GeneratorServing
    from cfxray.models.networks import load_generators

    _, generators = make_checkpoints(tmp_path / "models")
    example = torch.randint(0, 256, (2, 40, 40), dtype=torch.uint8)
    fp32 = export_onnx(GeneratorServing(load_generators(generators).p2n),
                       MODEL_SPECS[GENERATOR_P2N], (example,), tmp_path / "g.onnx", stride=4)
    calibration = served_images(blob_data, "train", 32, 8)
    check = served_images(blob_data, "val", 32, 4)
    out = tmp_path / "g.int8.onnx"
    with pytest.raises(UserError, match="departs from fp32"):
        quantize_checked(fp32, out, calibration, check, min_ssim=1.0)
    assert not out.exists()


def test_calibration_data_at_another_size_is_refused(tmp_path, blob_data):
    from cfxray.export.quantize import served_images

    with pytest.raises(UserError, match="32px images but the generators serve 64px"):
        served_images(blob_data, "train", 64, 8)
