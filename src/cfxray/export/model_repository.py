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
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cfxray.contract import CONFIG_FILE, MODEL_NAMES, MODEL_SPECS, model_versions
from cfxray.errors import UserError
from cfxray.export.settings import ServingSettings
from cfxray.export.triton_config import config_parameters, read_config, write_model_configs


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
            summary[name] = {"versions": model_versions(repo / name),
                             "image_size": int(config_parameters(config).get("image_size", 0)),
                             "max_batch_size": config.max_batch_size}
    return summary


def settings_dict(settings: ServingSettings) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(settings)))
