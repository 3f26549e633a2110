"""`cfxray export`: ONNX files, parity, the Triton repository layout, versions, the gate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from google.protobuf import text_format
from serving_support import MAX_BATCH, SIZE, make_checkpoints, xray_like
from tritonclient.grpc import model_config_pb2 as mc

from cfxray import contract as c
from cfxray.cli import main
from cfxray.errors import UserError
from cfxray.export import pbtxt
from cfxray.export.exporter import export_repository, require_gate
from cfxray.export.model_repository import publish
from cfxray.export.onnx_export import PARITY_ATOL, check_parity, onnx_session
from cfxray.export.settings import ServingSettings
from cfxray.export.wrappers import ClassifierServing, ExplainServing, GeneratorServing
from cfxray.lineage import read_lineage, sha256_file
from cfxray.models.classifier import load_classifier
from cfxray.models.networks import load_generators


def _models_root(repo: Path) -> Path:
    return repo.parent / "models"


def _pytorch_wrappers(repo: Path) -> dict[str, torch.nn.Module]:
    root = _models_root(repo)
    classifier = load_classifier(root / "classifier" / "classifier.pt")
    gens = load_generators(root / "cyclegan")
    return {c.CLASSIFIER: ClassifierServing(classifier),
            c.GENERATOR_P2N: GeneratorServing(gens.p2n),
            c.GENERATOR_N2P: GeneratorServing(gens.n2p),
            c.EXPLAIN: ExplainServing(classifier, gens.n2p, gens.p2n)}


def parse_config(path: Path) -> mc.ModelConfig:
    """Triton's own schema: an unknown field or a wrong enum fails here."""
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def test_repository_layout_configs_and_lineage(serving_repo):
    for name in c.MODEL_NAMES:
        folder = serving_repo / name
        assert sorted(p.name for p in (folder / "1").iterdir()) == [
            "lineage.json", "model.onnx", "model_card.html", "model_card.json", "model_card.md"]
        config = parse_config(folder / "config.pbtxt")
        spec = c.MODEL_SPECS[name]
        assert config.name == name and config.backend == "onnxruntime"
        assert config.max_batch_size == MAX_BATCH
        assert list(config.dynamic_batching.preferred_batch_size) == [2, 4]
        assert [(g.count, mc.ModelInstanceGroup.Kind.Name(g.kind))
                for g in config.instance_group] == [(1, "KIND_AUTO")]
        for got, want in ((config.input, spec.inputs), (config.output, spec.outputs)):
            assert [(t.name, mc.DataType.Name(t.data_type), list(t.dims)) for t in got] == \
                [(t.name, f"TYPE_{t.dtype}", list(t.resolved(SIZE))) for t in want]
        record = read_lineage(folder / "1")
        assert record["kind"] == f"serving/{name}" and record["version"] == 1
        models = _models_root(serving_repo)
        assert record["inputs"]["classifier"]["sha256"] == \
            sha256_file(models / "classifier" / "classifier.pt")
        assert set(record["inputs"]) == {"classifier", "generators"}
        assert max(record["metrics"]["parity_max_abs_diff"].values()) <= PARITY_ATOL


def test_onnx_models_are_single_files_with_dynamic_batch_and_size(serving_repo):
    for name in c.MODEL_NAMES:
        model = onnx.load(str(serving_repo / name / "1" / "model.onnx"))
        onnx.checker.check_model(model, full_check=True)
        assert not any(t.data_location == onnx.TensorProto.EXTERNAL
                       for t in model.graph.initializer)
        image = next(i for i in model.graph.input if i.name == c.IMAGE)
        assert image.type.tensor_type.elem_type == onnx.TensorProto.UINT8
        dims = image.type.tensor_type.shape.dim
        assert len(dims) == 3 and all(d.dim_param and not d.dim_value for d in dims)


@pytest.mark.parametrize("shape", [(1, SIZE, SIZE), (MAX_BATCH, SIZE, SIZE), (3, 48, 40)])
def test_onnxruntime_matches_pytorch(serving_repo, shape):
    """Parity bound PARITY_ATOL (1e-4) on every output, at the served and at another size."""
    wrappers = _pytorch_wrappers(serving_repo)
    rng = np.random.default_rng(shape[0])
    images = torch.from_numpy(rng.integers(0, 256, shape, dtype=np.uint8))
    targets = torch.tensor([[c.AUTO_TARGET], [0], [1], [7]][: shape[0]], dtype=torch.int32)
    for name, module in wrappers.items():
        spec = c.MODEL_SPECS[name]
        inputs = (images, targets) if len(spec.inputs) == 2 else (images,)
        report = check_parity(serving_repo / name / "1" / "model.onnx", module, spec, [inputs])
        assert report.passed, report.describe()


def test_classifier_takes_any_image_size(serving_repo):
    """It resizes inside its graph, so height and width need not be multiples of 4."""
    wrappers = _pytorch_wrappers(serving_repo)
    images = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (2, 37, 45), np.uint8))
    report = check_parity(serving_repo / c.CLASSIFIER / "1" / "model.onnx",
                          wrappers[c.CLASSIFIER], c.MODEL_SPECS[c.CLASSIFIER], [(images,)])
    assert report.passed, report.describe()


def test_explain_graph_semantics(serving_repo):
    """auto flips the predicted class, 0/1 are obeyed, the difference is cf - original."""
    session = onnx_session(serving_repo / c.EXPLAIN / "1" / "model.onnx")
    images = xray_like(4)
    targets = np.array([[c.AUTO_TARGET], [0], [1], [5]], dtype=np.int32)
    probs, cf, cf_probs, diff, used = session.run(
        [t.name for t in c.MODEL_SPECS[c.EXPLAIN].outputs],
        {c.IMAGE: images, c.TARGET_CLASS: targets})
    predicted = probs.argmax(1)
    assert used[:, 0].tolist() == [1 - predicted[0], 0, 1, 1 - predicted[3]]
    np.testing.assert_allclose(diff, cf - images / 255.0, atol=1e-6)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-6)
    np.testing.assert_allclose(cf_probs.sum(1), 1, atol=1e-6)
    generators = {0: c.GENERATOR_P2N, 1: c.GENERATOR_N2P}
    for i, target in enumerate(used[:, 0]):
        g = onnx_session(serving_repo / generators[int(target)] / "1" / "model.onnx")
        np.testing.assert_allclose(cf[i], g.run(None, {c.IMAGE: images[i:i + 1]})[0][0],
                                   atol=1e-6)
    assert np.abs(diff).max() > 0.01  # random generators change the image


def test_parity_check_catches_a_mismatched_model(serving_repo):
    """The generator_p2n file checked against the n2p weights must fail, not pass quietly."""
    wrappers = _pytorch_wrappers(serving_repo)
    images = torch.from_numpy(xray_like(2))
    report = check_parity(serving_repo / c.GENERATOR_P2N / "1" / "model.onnx",
                          wrappers[c.GENERATOR_N2P], c.MODEL_SPECS[c.GENERATOR_P2N], [(images,)])
    assert not report.passed and report.max_abs_diff[c.COUNTERFACTUAL] > 1e-3


def test_export_refuses_to_publish_when_parity_fails(tmp_path, monkeypatch):
    """Compare each exported file against another model: the exporter must publish nothing."""
    import cfxray.export.exporter as exporter

    classifier, generators = make_checkpoints(tmp_path / "models")
    other = load_classifier(make_checkpoints(tmp_path / "other", seed=1)[0])
    real = exporter.check_parity

    def against_other_weights(path, module, spec, batches, atol):
        return real(path, ClassifierServing(other), spec, batches, atol)

    monkeypatch.setattr(exporter, "check_parity", against_other_weights)
    repo = tmp_path / "repo"
    with pytest.raises(UserError, match="refusing to publish"):
        export_repository(classifier, generators, repo, progress=lambda _: None)
    assert [p.name for p in repo.iterdir()] == []
    assert not list(tmp_path.glob(".cfxray-export-*"))


def test_new_version_is_added_and_earlier_ones_untouched(serving_repo, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(serving_repo, repo)
    before = {p: sha256_file(p) for p in repo.glob("*/1/*")}
    staged = {}
    for name in c.MODEL_NAMES:
        staged[name] = tmp_path / "staged" / name
        shutil.copytree(repo / name / "1", staged[name])
    finalized = []
    version = publish(staged, repo, None, SIZE, ServingSettings(max_batch_size=MAX_BATCH),
                      lambda name, folder, n: finalized.append((name, n)))
    assert version == 2 and sorted(finalized) == sorted((n, 2) for n in c.MODEL_NAMES)
    assert {p: sha256_file(p) for p in repo.glob("*/1/*")} == before
    assert all((repo / name / "2" / "model.onnx").exists() for name in c.MODEL_NAMES)
    with pytest.raises(UserError, match="never overwritten"):
        publish(staged, repo, 1, SIZE, ServingSettings(), lambda *a: None)


def test_export_cli_refuses_existing_version_and_failed_gate(serving_repo, tmp_path, capsys):
    models = _models_root(serving_repo)
    base = ["export", "--classifier", str(models / "classifier" / "classifier.pt"),
            "--generators", str(models / "cyclegan"), "--out", str(serving_repo)]
    assert main([*base, "--version", "1"]) == 2
    assert "already exists" in capsys.readouterr().err
    evaluation = tmp_path / "eval"
    evaluation.mkdir()
    (evaluation / "metrics.json").write_text(json.dumps({"gate_passed": False, "auc": 0.5}))
    assert main([*base, "--evaluation", str(evaluation)]) == 2
    assert "failed its quality gate" in capsys.readouterr().err
    (evaluation / "metrics.json").write_text(json.dumps({"auc": 0.9}))
    assert main([*base, "--evaluation", str(evaluation)]) == 2
    assert "gate_passed" in capsys.readouterr().err
    assert sorted(p.name for p in (serving_repo / c.EXPLAIN).iterdir()) == ["1", "config.pbtxt"]


@pytest.mark.parametrize(("metrics", "verdict"), [
    ({"gate_passed": True}, True), ({"gate_passed": False}, False),
    ({"gate/passed": 1.0}, True), ({"gate/passed": 0.0}, False),
    ({"gate/passed": 0.5}, None), ({"gate_passed": "yes"}, None), ({}, None)])
def test_gate_verdict_forms(tmp_path, metrics, verdict):
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    if verdict:
        assert require_gate(tmp_path) == metrics
    else:
        with pytest.raises(UserError, match="failed its quality gate" if verdict is False
                           else "no gate verdict"):
            require_gate(tmp_path)


def test_export_refuses_models_of_different_sizes(tmp_path):
    classifier, _ = make_checkpoints(tmp_path / "a", size=32)
    _, generators = make_checkpoints(tmp_path / "b", size=48)
    with pytest.raises(UserError, match=r"32px.*48px"):
        export_repository(classifier, generators, tmp_path / "repo", progress=lambda _: None)


def test_pbtxt_round_trip_agrees_with_protobuf(serving_repo):
    text = (serving_repo / c.EXPLAIN / "config.pbtxt").read_text()
    parsed = pbtxt.loads(text)
    again = text_format.Parse(pbtxt.dumps(parsed), mc.ModelConfig())
    assert again == text_format.Parse(text, mc.ModelConfig())
    # Repeated fields written once per element, comments and <> messages are text format too.
    alt = pbtxt.loads('name: "m" # comment\ninput { name: "A" dims: 1 dims: 2 }\n'
                      'input { name: "B" dims: [3] }\nversion_policy < all { } >')
    assert alt == {"name": "m", "input": [{"name": "A", "dims": [1, 2]},
                                          {"name": "B", "dims": [3]}],
                   "version_policy": {"all": {}}}
