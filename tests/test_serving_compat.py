"""Export checks every model in the production server's ONNX Runtime and refuses to publish
what that runtime cannot run (a newer opset than it implements, here)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
import yaml
from serving_support import make_checkpoints, xray_like

from cfxray import contract as c
from cfxray.errors import UserError
from cfxray.export.compat import (
    EXPORT_OPSET,
    TRITON_RUNTIMES,
    check_versions,
    runtime_python,
    server_runtime,
)
from cfxray.export.exporter import export_repository
from cfxray.export.onnx_export import check_parity
from cfxray.export.settings import ExportSettings
from cfxray.export.wrappers import ClassifierServing
from cfxray.models.classifier import load_classifier

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION = server_runtime(ExportSettings.triton_image)


def _with_opset(source: Path, target: Path, opset: int) -> Path:
    model = onnx.load(str(source))
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = opset
    onnx.save(model, str(target))
    return target


def test_the_checked_runtime_is_the_one_the_manifests_deploy():
    """Bumping the image without its ONNX Runtime entry (or the reverse) fails here."""
    deployment = yaml.safe_load((ROOT / "serving/k8s/base/deployment.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == ExportSettings.triton_image
    params = yaml.safe_load((ROOT / "params.yaml").read_text())["export"]
    assert params["triton_image"] == container["image"]
    assert container["image"] in TRITON_RUNTIMES
    assert PRODUCTION.max_opset >= EXPORT_OPSET


def test_published_models_carry_the_pinned_opset(serving_repo):
    for name in c.MODEL_NAMES:
        model = onnx.load(str(serving_repo / name / "1" / "model.onnx"), load_external_data=False)
        assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == \
            {EXPORT_OPSET}
        assert check_versions(serving_repo / name / "1" / "model.onnx", PRODUCTION) == []


def test_a_too_new_opset_fails_in_the_production_runtime_only(serving_repo, tmp_path):
    """This environment's onnxruntime runs opset max+1; the pinned image's does not."""
    newer = _with_opset(serving_repo / c.CLASSIFIER / "1" / "model.onnx", tmp_path / "m.onnx",
                        PRODUCTION.max_opset + 1)
    assert check_versions(newer, PRODUCTION) == [
        f"opset {PRODUCTION.max_opset + 1} > {PRODUCTION.max_opset}"]
    module = ClassifierServing(load_classifier(serving_repo.parent / "models" / "classifier"
                                               / "classifier.pt"))
    batches = [(torch.from_numpy(xray_like(2)),)]
    spec = c.MODEL_SPECS[c.CLASSIFIER]
    assert check_parity(newer, module, spec, batches).passed
    report = check_parity(newer, module, spec, batches,
                          runtime=(PRODUCTION.describe(), runtime_python(PRODUCTION)))
    assert not report.passed and "opset" in report.error.lower()
    assert PRODUCTION.onnxruntime in report.describe()


def test_export_refuses_to_publish_a_model_the_production_runtime_cannot_load(
        tmp_path, monkeypatch):
    import cfxray.export.exporter as exporter

    classifier, generators = make_checkpoints(tmp_path / "models")
    real = exporter.export_onnx

    def newer_opset(*args, **kwargs):
        path = real(*args, **kwargs)
        return _with_opset(path, path, PRODUCTION.max_opset + 1)

    monkeypatch.setattr(exporter, "export_onnx", newer_opset)
    repo = tmp_path / "repo"
    with pytest.raises(UserError, match=rf"refusing to publish: classifier needs opset "
                                        rf"{PRODUCTION.max_opset + 1}"):
        export_repository(classifier, generators, repo, progress=lambda _: None)
    assert list(repo.iterdir()) == []


def test_unknown_triton_image_is_refused():
    with pytest.raises(UserError, match="no ONNX Runtime known"):
        server_runtime("nvcr.io/nvidia/tritonserver:99.01-py3")
