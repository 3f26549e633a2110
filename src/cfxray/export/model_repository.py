"""The Triton model repository: configs, integer version folders, and publishing a new version.

Layout (Triton's): `REPO/<model>/config.pbtxt` and `REPO/<model>/<N>/model.onnx`, plus a
`lineage.json` in every version folder. One export publishes the same version number N in
all four models, so a version is a consistent set (the explain graph embeds the same
classifier and generators the other three serve). Earlier version folders are never touched:
a rollback is re-pointing the version policy, not re-exporting.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cfxray.contract import (
    CONFIG_FILE,
    MODEL_NAMES,
    MODEL_SPECS,
    ModelSpec,
    TensorSpec,
    model_versions,
)
from cfxray.errors import UserError
from cfxray.export import pbtxt
from cfxray.export.settings import ServingSettings

ONNX_FILE = "model.onnx"


def production_config(spec: ModelSpec, size: int, settings: ServingSettings) -> dict[str, Any]:
    """The ONNX Runtime backend config of one model, as pbtxt-ready values."""
    def tensors(specs: tuple[TensorSpec, ...]) -> list[dict[str, Any]]:
        return [{"name": t.name, "data_type": pbtxt.Enum(f"TYPE_{t.dtype}"),
                 "dims": list(t.resolved(size))} for t in specs]

    config: dict[str, Any] = {
        "name": spec.name,
        "backend": "onnxruntime",
        "max_batch_size": settings.max_batch_size,
        "version_policy": {"latest": {"num_versions": 1}},
        "input": tensors(spec.inputs),
        "output": tensors(spec.outputs),
        "dynamic_batching": {
            "preferred_batch_size": list(settings.preferred_batch_sizes),
            "max_queue_delay_microseconds": settings.max_queue_delay_microseconds,
        },
        "instance_group": [{"count": settings.instance_count,
                            "kind": pbtxt.Enum(settings.instance_kind)}],
        "default_model_filename": ONNX_FILE,
    }
    parameters = {"image_size": str(size), "resize": settings.resize}
    if settings.intra_op_threads > 0:
        parameters["intra_op_thread_count"] = str(settings.intra_op_threads)
    config["parameters"] = [{"key": k, "value": {"string_value": v}}
                            for k, v in parameters.items()]
    return config


def config_header(spec: ModelSpec) -> str:
    return (f"# {spec.name}: {spec.description}\n"
            "# Written by `cfxray export`; contract in docs/SERVING.md.\n")


def config_text(config: dict[str, Any], header: str) -> str:
    return header + pbtxt.dumps(config)


def production_config_text(spec: ModelSpec, size: int, settings: ServingSettings) -> str:
    """The config.pbtxt `publish` writes for a model, as text: export records its hash in the
    version's lineage.json, so an audit notices a config edited after the export."""
    return config_text(production_config(spec, size, settings), config_header(spec))


def read_config(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / CONFIG_FILE
    if not path.exists():
        raise UserError(f"{model_dir} is not a Triton model folder ({CONFIG_FILE} missing)")
    try:
        return pbtxt.loads(path.read_text())
    except ValueError as exc:
        raise UserError(f"cannot read {path}: {exc}") from exc


def config_parameters(config: dict[str, Any]) -> dict[str, str]:
    params = config.get("parameters") or []
    params = params if isinstance(params, list) else [params]
    return {p["key"]: p["value"]["string_value"] for p in params}


def latest_version(repo: str | Path) -> int:
    """The newest version present in any of the four models (0 for an empty repository)."""
    return max((v for name in MODEL_NAMES for v in model_versions(Path(repo) / name)), default=0)


def check_version_free(repo: str | Path, version: int) -> None:
    if version < 1:
        raise UserError(f"version must be a positive integer, got {version}")
    taken = [name for name in MODEL_NAMES if (Path(repo) / name / str(version)).exists()]
    if taken:
        raise UserError(f"version {version} already exists in {Path(repo)} for "
                        f"{', '.join(taken)}; published versions are never overwritten "
                        f"(omit --version to publish {latest_version(repo) + 1})")


@contextmanager
def repository_lock(repo: Path) -> Iterator[None]:
    """Two exports into one repository must not pick the same version number."""
    repo.mkdir(parents=True, exist_ok=True)
    with open(repo / ".export.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write_config(model_dir: Path, config: dict[str, Any], header: str) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = model_dir / f".{CONFIG_FILE}.tmp-{os.getpid()}"
    tmp.write_text(config_text(config, header))
    os.replace(tmp, model_dir / CONFIG_FILE)


def publish(staged: dict[str, Path], repo: Path, version: int | None, size: int,
            settings: ServingSettings, finalize: Callable[[str, Path, int], None]) -> int:
    """Move staged version folders into the repository as version N (new configs alongside).

    `finalize(name, folder, N)` completes each staged folder (its lineage record) once N is
    known. Nothing is moved unless all four are staged, and an existing version is never
    replaced.
    """
    missing = set(MODEL_NAMES) - set(staged)
    if missing:
        raise UserError(f"cannot publish: models {sorted(missing)} were not exported")
    with repository_lock(repo):
        version = latest_version(repo) + 1 if version is None else version
        check_version_free(repo, version)
        for name in MODEL_NAMES:
            spec = MODEL_SPECS[name]
            finalize(name, staged[name], version)
            write_config(repo / name, production_config(spec, size, settings), config_header(spec))
            os.rename(staged[name], repo / name / str(version))
    return version


def repository_summary(repo: str | Path) -> dict[str, Any]:
    """What a repository serves: per model, its versions and the configured image size."""
    repo = Path(repo)
    summary: dict[str, Any] = {}
    for name in MODEL_NAMES:
        if (repo / name / CONFIG_FILE).exists():
            config = read_config(repo / name)
            summary[name] = {"versions": model_versions(repo / name),
                             "image_size": int(config_parameters(config).get("image_size", 0)),
                             "max_batch_size": config.get("max_batch_size")}
    return summary


def settings_dict(settings: ServingSettings) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(settings)))
