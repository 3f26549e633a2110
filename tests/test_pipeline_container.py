"""The project image's Dockerfile (no Docker engine here: its structure is checked) and the
Kubernetes manifests that serve the model repository with Triton."""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from cfxray.contract import MODEL_NAMES

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "serving" / "k8s"


# --- Dockerfile ----------------------------------------------------------------------------------


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for instruction in instructions():
        if instruction[0] == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [p.strip() for p in lines if p.strip() and not p.startswith("#")]


def test_dockerfile_is_multi_stage_with_a_cpu_default_and_a_cuda_variant():
    all_stages = stages()
    assert len(all_stages) >= 2
    names = [re.search(r"\bAS\s+(\S+)", s[0][1], re.I) for s in all_stages]
    assert all(names), "every stage is named"
    args = {rest.split("=")[0]: rest.split("=", 1)[1] if "=" in rest else None
            for word, rest in instructions() if word == "ARG"}
    assert args["VARIANT"] == "cpu"
    assert "TORCH_INDEX_URL" in args


def test_every_copied_file_exists_and_is_in_the_build_context():
    ignored = dockerignore()
    sources = []
    for word, rest in instructions():
        if word != "COPY" or "--from=" in rest:
            continue
        parts = [p for p in rest.split() if not p.startswith("--")]
        sources += parts[:-1]
    assert "requirements.lock" in sources and "src" in sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such file"
        assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), source


def test_runtime_stage_runs_cfxray_as_a_non_root_user():
    final = stages()[-1]
    users = [rest for word, rest in final if word == "USER"]
    assert users, "the final stage sets USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert user.isdigit(), "numeric, so Kubernetes can check runAsNonRoot"
    entrypoint = [rest for word, rest in final if word == "ENTRYPOINT"][-1]
    assert json.loads(entrypoint) == ["cfxray"]
    project = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^cfxray = "cfxray\.cli:main"$', project, re.M)
    # The package is installed from the locked dependencies in the builder stage.
    runs = " ".join(rest for word, rest in stages()[0] if word == "RUN")
    assert "requirements.variant.txt" in runs and "pip install --no-deps ." in runs


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_lock_for_each_variant(variant):
    lock = (ROOT / "requirements.lock").read_text()
    result = subprocess.run(["sh", str(ROOT / "image-build" / "lock-for-variant.sh"), variant],
                            input=lock, capture_output=True, text=True, check=True)
    names = {line.split("==")[0] for line in result.stdout.splitlines() if "==" in line}
    locked = {line.split("==")[0] for line in lock.splitlines() if "==" in line}
    if variant == "cuda":
        assert result.stdout == lock
        return
    cuda_only = {n for n in locked if n in ("torch", "torchvision", "triton")
                 or n.startswith(("cuda-", "nvidia-cu", "nvidia-nccl", "nvidia-nv"))}
    assert {"torch", "torchvision"} <= cuda_only
    assert names == locked - cuda_only
    assert {"kfp", "dvc", "nvidia-pytriton", "tritonclient", "onnxruntime"} <= names


def test_lock_script_rejects_an_unknown_variant():
    result = subprocess.run(["sh", str(ROOT / "image-build" / "lock-for-variant.sh"), "rocm"],
                            input="", capture_output=True, text=True)
    assert result.returncode == 2 and "usage" in result.stderr


# --- Kubernetes ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict]:
    docs = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs[doc["kind"]] = doc
    return docs


def test_kustomization_lists_every_manifest(manifests):
    listed = set(manifests["Kustomization"]["resources"])
    present = {p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"}
    assert listed == present
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PersistentVolumeClaim"} <= set(
        manifests)


def _container(manifests) -> dict:
    (container,) = manifests["Deployment"]["spec"]["template"]["spec"]["containers"]
    return container


def _flags(container: dict) -> dict[str, list[str]]:
    flags: dict[str, list[str]] = {}
    for arg in container["args"]:
        key, _, value = arg.partition("=")
        flags.setdefault(key, []).append(value)
    return flags


def test_triton_loads_exactly_the_exported_models_from_the_repository_volume(manifests):
    container = _container(manifests)
    flags = _flags(container)
    assert container["command"] == ["tritonserver"]
    assert flags["--model-control-mode"] == ["explicit"]
    assert sorted(flags["--load-model"]) == sorted(MODEL_NAMES)
    (repository,) = flags["--model-repository"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volume_name = mounts[repository]["name"]
    volumes = {v["name"]: v for v in manifests["Deployment"]["spec"]["template"]["spec"]["volumes"]}
    claim = volumes[volume_name]["persistentVolumeClaim"]["claimName"]
    assert claim == manifests["PersistentVolumeClaim"]["metadata"]["name"]


def test_pipeline_publishes_into_the_claim_triton_serves():
    from cfxray.pipeline.definition import MODEL_REPOSITORY_PVC

    pvc = yaml.safe_load((K8S / "model-repository-pvc.yaml").read_text())
    assert pvc["metadata"]["name"] == MODEL_REPOSITORY_PVC
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]


def test_probes_use_tritons_health_endpoints_on_a_declared_port(manifests):
    container = _container(manifests)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    http_port = int(_flags(container)["--http-port"][0])
    assert ports["http"] == http_port
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in ports


def test_service_and_autoscaler_point_at_the_deployment(manifests):
    deployment, service, hpa = (manifests["Deployment"], manifests["Service"],
                                manifests["HorizontalPodAutoscaler"])
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    port_names = {p["name"] for p in _container(manifests)["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} == port_names
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    # Utilisation targets need requests on the container.
    resources = {m["resource"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource"}
    assert resources <= set(_container(manifests)["resources"]["requests"])


def test_triton_runs_unprivileged(manifests):
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert _container(manifests)["securityContext"]["allowPrivilegeEscalation"] is False
