"""The Triton model repository: configs, integer version folders, and publishing a new version.

Layout (Triton's): `REPO/<model>/config.pbtxt` and `REPO/<model>/<N>/model.onnx`, plus a
`lineage.json` in every version folder. One export publishes the same version number N in
all four models, so a version is a consistent set (the explain graph embeds the same
classifier and generators the other three serve). Earlier version folders are never
changed: which one is served is the rollout state's business (`cfxray.export.rollout`), and
so is removing old ones.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cfxray.contract import MODEL_NAMES, MODEL_SPECS
from cfxray.errors import UserError
from cfxray.export.triton_config import (
    CONFIG_FILE,
    config_parameters,
    read_config,
    write_model_configs,
)

INSTANCE_KINDS = ("KIND_AUTO", "KIND_CPU", "KIND_GPU")
TENSORRT_PRECISIONS = ("FP32", "FP16")


@dataclass(frozen=True)
class ServingSettings:
    """How Triton batches, places and warms up the models, how clients fit images to them,
    which server the models must run in, and how many versions stay.

    The `export` section of params.yaml; the fields down to `gpu_tensorrt_precision` land in
    each model's config.pbtxt and configs/gpu.pbtxt.
    """

    max_batch_size: int = 16
    preferred_batch_sizes: tuple[int, ...] = (4, 8, 16)
    max_queue_delay_microseconds: int = 2000
    instance_count: int = 1
    instance_kind: str = "KIND_AUTO"
    intra_op_threads: int = 0  # 0: onnxruntime's default
    resize: str = "pad"  # how clients fit images to the model's size: the preprocess step's mode
    # Warm-up samples in every config, one per batch size (per class for the explain graph).
    warmup_batch_sizes: tuple[int, ...] = (1,)
    # configs/gpu.pbtxt (`tritonserver --model-config-name=gpu`): GPU instances, CUDA EP.
    gpu_instance_count: int = 1
    gpu_tensorrt: bool = False  # TensorRT EP in front of CUDA (not measured: no GPU here)
    gpu_tensorrt_precision: str = "FP16"
    # The production server: export verifies every model in its ONNX Runtime as well
    # (cfxray.export.compat) and refuses to publish what it cannot run.
    triton_image: str = "nvcr.io/nvidia/tritonserver:25.01-py3"
    keep_versions: int = 5  # versions kept per model after a publish (the served one always)

    def validate(self) -> None:
        if self.max_batch_size < 1:
            raise UserError("max_batch_size must be at least 1")
        if any(not 1 <= b <= self.max_batch_size for b in self.preferred_batch_sizes):
            raise UserError(f"preferred batch sizes {self.preferred_batch_sizes} must lie in "
                            f"1..max_batch_size ({self.max_batch_size})")
        if self.instance_count < 1:
            raise UserError("instance_count must be at least 1")
        if self.instance_kind not in INSTANCE_KINDS:
            raise UserError(f"instance_kind must be one of {INSTANCE_KINDS}")
        if any(not 1 <= b <= self.max_batch_size for b in self.warmup_batch_sizes):
            raise UserError(f"warm-up batch sizes {self.warmup_batch_sizes} must lie in "
                            f"1..max_batch_size ({self.max_batch_size})")
        if self.gpu_instance_count < 1:
            raise UserError("gpu_instance_count must be at least 1")
        if self.gpu_tensorrt_precision not in TENSORRT_PRECISIONS:
            raise UserError(f"gpu_tensorrt_precision must be one of {TENSORRT_PRECISIONS}")
        if self.keep_versions < 1:
            raise UserError("keep_versions must be at least 1")


def versions(model_dir: str | Path) -> list[int]:
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def latest_version(repo: str | Path) -> int:
    """The newest version present in any of the four models (0 for an empty repository)."""
    return max((v for name in MODEL_NAMES for v in versions(Path(repo) / name)), default=0)


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


def publish(staged: dict[str, Path], repo: Path, version: int | None, size: int,
            settings: ServingSettings, finalize: Callable[[str, Path, int], None]) -> int:
    """Move staged version folders into the repository as version N (new configs alongside).

    `finalize(name, folder, N)` completes each staged folder (its lineage record) once N is
    known. Nothing is moved unless all four are staged, and an existing version is never
    replaced.
    """
    from cfxray.export.rollout import served_version

    missing = set(MODEL_NAMES) - set(staged)
    if missing:
        raise UserError(f"cannot publish: models {sorted(missing)} were not exported")
    with repository_lock(repo):
        version = latest_version(repo) + 1 if version is None else version
        check_version_free(repo, version)
        for name in MODEL_NAMES:
            spec = MODEL_SPECS[name]
            finalize(name, staged[name], version)
            write_model_configs(repo / name, spec, size, settings, served_version(repo))
            os.rename(staged[name], repo / name / str(version))
    return version


def repository_summary(repo: str | Path) -> dict[str, Any]:
    """What a repository serves: per model, its versions and the configured image size."""
    repo = Path(repo)
    summary: dict[str, Any] = {}
    for name in MODEL_NAMES:
        if (repo / name / CONFIG_FILE).exists():
            config = read_config(repo / name)
            summary[name] = {"versions": versions(repo / name),
                             "image_size": int(config_parameters(config).get("image_size", 0)),
                             "max_batch_size": config.max_batch_size}
    return summary


def settings_dict(settings: ServingSettings) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(settings)))
