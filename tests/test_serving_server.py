"""A real Triton server (nvidia-pytriton's binary) serving the exported repository."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from google.protobuf import json_format, text_format
from PIL import Image
from serving_support import MAX_BATCH, SIZE, xray_like
from tritonclient.grpc import model_config_pb2 as mc

from cfxray import contract as c
from cfxray.cli import main
from cfxray.errors import UserError
from cfxray.export.onnx_export import PARITY_ATOL
from cfxray.export.wrappers import ExplainServing
from cfxray.models.classifier import load_classifier
from cfxray.models.networks import load_generators
from cfxray.serving.client import DIRECTION_TARGETS, ExplainClient, ServingError, TritonModels
from cfxray.serving.local_repository import build_local_repository
from cfxray.serving.triton import free_ports

PROTOCOLS = ("http", "grpc")
COMPARED = ("name", "max_batch_size", "input", "output", "dynamic_batching", "version_policy")


def _url(server, protocol: str) -> str:
    return server.endpoints[protocol]


def _prod(repo: Path, name: str) -> mc.ModelConfig:
    return text_format.Parse((repo / name / "config.pbtxt").read_text(), mc.ModelConfig())


def test_local_repository_is_the_production_one_on_the_python_backend(serving_repo, tmp_path):
    build_local_repository(serving_repo, tmp_path / "local")
    for name in c.MODEL_NAMES:
        prod = _prod(serving_repo, name)
        local = text_format.Parse((tmp_path / "local" / name / "config.pbtxt").read_text(),
                                  mc.ModelConfig())
        assert (prod.backend, local.backend) == ("onnxruntime", "python")
        for fieldname in COMPARED:
            assert getattr(local, fieldname) == getattr(prod, fieldname), fieldname
        assert [g.count for g in local.instance_group] == [g.count for g in prod.instance_group]
        assert dict(prod.parameters).items() <= dict(local.parameters).items()
        onnx_file = tmp_path / "local" / name / "1" / "model.onnx"
        assert onnx_file.resolve() == (serving_repo / name / "1" / "model.onnx").resolve()
        assert (tmp_path / "local" / name / "1" / "model.py").exists()


def test_served_configs_match_the_production_contract(triton_server, serving_repo):
    with TritonModels(_url(triton_server, "http")) as models:
        for name in c.MODEL_NAMES:
            served = json_format.ParseDict(models.config(name), mc.ModelConfig(),
                                           ignore_unknown_fields=True)
            prod = _prod(serving_repo, name)
            assert served.max_batch_size == prod.max_batch_size == MAX_BATCH
            for got, want in ((served.input, prod.input), (served.output, prod.output)):
                assert [(t.name, t.data_type, list(t.dims)) for t in got] == \
                    [(t.name, t.data_type, list(t.dims)) for t in want]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _successes(metrics: str, model: str) -> float:
    line = next(x for x in metrics.splitlines()
                if x.startswith(f'nv_inference_request_success{{model="{model}"'))
    return float(line.rsplit(" ", 1)[1])


def test_health_readiness_and_metrics(triton_server):
    http = f"http://{triton_server.endpoints['http']}"
    assert _get(f"{http}/v2/health/live")[0] == 200
    assert _get(f"{http}/v2/health/ready")[0] == 200
    assert all(_get(f"{http}/v2/models/{m}/ready")[0] == 200 for m in c.MODEL_NAMES)
    assert _get(f"{http}/v2/models/no_such_model/ready")[0] >= 400
    before = _successes(_get(triton_server.endpoints["metrics"])[1], c.CLASSIFIER)
    with TritonModels(triton_server.endpoints["http"]) as models:
        models.infer(c.CLASSIFIER, {c.IMAGE: xray_like(2)}, [c.PROBABILITIES])
    assert _successes(_get(triton_server.endpoints["metrics"])[1], c.CLASSIFIER) == before + 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_served_explanations_match_pytorch(triton_server, serving_repo, protocol):
    """Over the wire, in batches the client splits (6 images, max batch 4), within PARITY_ATOL."""
    models = serving_repo.parent / "models"
    classifier = load_classifier(models / "classifier" / "classifier.pt")
    gens = load_generators(models / "cyclegan")
    reference = ExplainServing(classifier, gens.n2p, gens.p2n)
    images = xray_like(6, seed=3)
    with ExplainClient(_url(triton_server, protocol), protocol) as client:
        assert (client.served.size, client.served.max_batch_size) == (SIZE, MAX_BATCH)
        for direction, target in DIRECTION_TARGETS.items():
            results = client.explain(images, direction)
            with torch.no_grad():
                want = reference(torch.from_numpy(images),
                                 torch.full((6, 1), target, dtype=torch.int32))
            probs, cf, cf_probs, diff, used = (w.numpy() for w in want)
            assert len(results) == 6
            for i, r in enumerate(results):
                assert r.model_version == "1"
                assert r.target_class == used[i, 0]
                for got, expected in ((r.probabilities, probs[i]), (r.counterfactual, cf[i]),
                                      (r.counterfactual_probabilities, cf_probs[i]),
                                      (r.difference, diff[i])):
                    assert np.abs(got - expected).max() <= PARITY_ATOL
            if direction == "auto":
                assert all(r.target_class == 1 - r.predicted for r in results)


def _post(url: str, inputs: list[dict]) -> tuple[int, str]:
    request = urllib.request.Request(url, data=json.dumps({"inputs": inputs}).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _tensor(name: str, shape: tuple[int, ...], dtype: str = "UINT8") -> dict:
    return {"name": name, "shape": list(shape), "datatype": dtype,
            "data": [0] * int(np.prod(shape))}


def _request(shape: tuple[int, ...], dtype: str = "UINT8", target: bool = True) -> list[dict]:
    inputs = [_tensor(c.IMAGE, shape, dtype)]
    return [*inputs, _tensor(c.TARGET_CLASS, (shape[0], 1), "INT32")] if target else inputs


BAD_REQUESTS = {
    "wrong dtype": (_request((1, SIZE, SIZE), "FP32"), "data-type"),
    "wrong rank": (_request((1, SIZE * SIZE)), "unexpected shape"),
    "wrong size": (_request((1, 16, 16)), "unexpected shape"),
    "empty batch": (_request((0, SIZE, SIZE)), "byte size"),
    "batch above max": (_request((MAX_BATCH + 1, SIZE, SIZE)), "batch-size must be"),
    "missing input": (_request((1, SIZE, SIZE), target=False), "missing required input"),
}


def test_bad_requests_get_400_and_the_server_keeps_serving(triton_server):
    url = f"http://{triton_server.endpoints['http']}/v2/models/{c.EXPLAIN}/infer"
    for case, (inputs, message) in BAD_REQUESTS.items():
        status, body = _post(url, inputs)
        assert status == 400, (case, status, body)
        assert message in json.loads(body)["error"], (case, body)
        status, body = _post(url, _request((1, SIZE, SIZE)))
        assert status == 200, (case, body)
    assert triton_server.is_ready()


def test_bad_grpc_requests_are_invalid_argument(triton_server):
    with TritonModels(triton_server.endpoints["grpc"], "grpc") as models:
        bad = {"float pixels": np.zeros((1, SIZE, SIZE), np.float32),
               "wrong size": np.zeros((1, SIZE + 4, SIZE + 4), np.uint8),
               "batch above max": np.zeros((MAX_BATCH + 1, SIZE, SIZE), np.uint8)}
        for array in bad.values():
            with pytest.raises(ServingError, match="classifier refused"):
                models.infer(c.CLASSIFIER, {c.IMAGE: array}, [c.PROBABILITIES])
        out, _ = models.infer(c.CLASSIFIER, {c.IMAGE: xray_like(1)}, [c.PROBABILITIES])
        assert out[c.PROBABILITIES].shape == (1, 2)


def test_client_checks_inputs_before_sending(triton_server):
    with ExplainClient(triton_server.endpoints["http"]) as client:
        for bad, message in ((np.zeros((1, SIZE, SIZE), np.float32), "uint8"),
                             (np.zeros((SIZE, SIZE), np.uint8), r"\[batch"),
                             (np.zeros((0, SIZE, SIZE), np.uint8), "empty batch"),
                             (np.zeros((1, 16, 16), np.uint8), "32x32")):
            with pytest.raises(UserError, match=message):
                client.explain(bad)
        with pytest.raises(UserError, match="direction"):
            client.explain(xray_like(1), "sideways")
    with pytest.raises(ServingError, match=r"cannot reach|failed to connect|Connection"):
        ExplainClient(f"127.0.0.1:{free_ports(1)[0]}", timeout_s=5)


def _write_images(folder: Path) -> list[Path]:
    """Formats and sizes the ingest step accepts: 8-bit PNG, RGB JPEG, 16-bit PNG."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    big = np.kron(xray_like(1, 32)[0], np.ones((3, 2), np.uint8))  # 96 x 64
    Image.fromarray(big).save(folder / "tall.png")
    rgb = np.repeat(xray_like(1, 50, seed=1)[0][..., None], 3, axis=2)
    Image.fromarray(rgb).save(folder / "colour.jpg")
    Image.fromarray((rng.random((40, 40)) * 65535).astype(np.uint16)).save(folder / "deep.png")
    return sorted(folder.iterdir())


def test_explain_command_over_http_and_grpc(triton_server, tmp_path, capsys):
    images = _write_images(tmp_path / "in")
    out = tmp_path / "http"
    argv = ["explain", *map(str, images), "--url", triton_server.endpoints["http"], "--out",
            str(out), "--direction", "n2p"]
    assert main(argv) == 0
    for image in images:
        record = json.loads((out / f"{image.stem}.json").read_text())
        assert record["direction"] == "n2p" and record["target"] == "PNEUMONIA"
        assert set(record["probabilities_before"]) == {"NORMAL", "PNEUMONIA"}
        assert abs(sum(record["probabilities_after"].values()) - 1) < 1e-4
        assert Image.open(out / f"{image.stem}_counterfactual.png").size == (SIZE, SIZE)
        heatmap = Image.open(out / f"{image.stem}_heatmap.png")
        assert heatmap.mode == "RGB" and heatmap.size[0] >= SIZE
    assert "wrote 3 explanations" in capsys.readouterr().out

    # The installed command, from a folder that is not the checkout, over gRPC.
    cfxray = Path(sys.executable).with_name("cfxray")
    done = subprocess.run([str(cfxray), "explain", str(images[0]), "--url",
                           triton_server.endpoints["grpc"], "--protocol", "grpc", "--out", "g"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "g" / f"{images[0].stem}.json").read_text())["model_version"] == "1"

    # An unreadable file is named and skipped; the others are still explained (exit 2).
    (tmp_path / "notes.png").write_text("not an image")
    mixed = tmp_path / "mixed"
    assert main(["explain", str(tmp_path / "notes.png"), str(images[0]), "--url",
                 triton_server.endpoints["http"], "--out", str(mixed)]) == 2
    captured = capsys.readouterr()
    assert "skipped notes.png: not an image" in captured.err
    assert (mixed / f"{images[0].stem}.json").exists() and not (mixed / "notes.json").exists()
    assert main(["explain", str(tmp_path / "notes.png"), "--url",
                 triton_server.endpoints["http"], "--out", str(mixed)]) == 2
    assert "no image could be read" in capsys.readouterr().err


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            children = (task / "children").read_text().split() if task.exists() else []
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_command_stops_cleanly(serving_repo, sig):
    """`cfxray serve` prints its endpoints once ready and leaves no process or shm behind."""
    http, grpc, metrics = free_ports(3)
    cfxray = Path(sys.executable).with_name("cfxray")
    proc = subprocess.Popen([str(cfxray), "serve", "--model-repo", str(serving_repo),
                             "--http-port", str(http), "--grpc-port", str(grpc),
                             "--metrics-port", str(metrics)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Ctrl-C"):
                break
        text = "".join(lines)
        assert f"http://127.0.0.1:{http}" in text and f"127.0.0.1:{grpc}" in text, text
        assert _get(f"http://127.0.0.1:{http}/v2/health/ready")[0] == 200
        assert _get(f"http://127.0.0.1:{metrics}/metrics")[0] == 200
        children = _descendants(proc.pid)
        assert len(children) >= 5  # tritonserver and one Python stub per model
        workspaces = {Path(a.split("=", 1)[1]).parent for p in children
                      for a in Path(f"/proc/{p}/cmdline").read_text().split("\0")
                      if a.startswith("--model-repository=")}
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == 0
        assert "stopped" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in children if _alive(p)]
    assert not list(Path("/dev/shm").glob(f"cfxray-{proc.pid}-*"))
    assert workspaces and not any(w.exists() for w in workspaces)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/live", timeout=2)


def test_serve_refuses_busy_ports_and_missing_repository(triton_server, tmp_path, capsys):
    port = int(triton_server.endpoints["http"].rsplit(":", 1)[1])
    other = free_ports(2)
    assert main(["serve", "--model-repo", str(triton_server.model_repo), "--http-port",
                 str(port), "--grpc-port", str(other[0]), "--metrics-port",
                 str(other[1])]) == 2
    assert "ports in use" in capsys.readouterr().err
    assert main(["serve", "--model-repo", str(tmp_path / "nothing")]) == 2
    assert "not found" in capsys.readouterr().err


def _load_benchmark():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "serving_load.py"
    spec = importlib.util.spec_from_file_location("serving_load", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_load_benchmark_counts_every_request(triton_server, protocol):
    """The benchmark's bookkeeping on a short run (its numbers are not asserted)."""
    bench = _load_benchmark()
    summary = bench.run_load(triton_server.endpoints[protocol], protocol, requests=24,
                             concurrency=4, batch=2, max_seconds=120)
    assert summary["requests_ok"] == 24 and summary["requests_failed"] == 0
    assert summary["requests_not_sent"] == 0
    assert summary["latency_ms_p50"] <= summary["latency_ms_p99"] <= summary["latency_ms_max"]
    bench.require_loopback(triton_server.endpoints[protocol])
    with pytest.raises(SystemExit, match="only targets loopback"):
        bench.require_loopback("10.1.2.3:8000")
