"""Lineage records: what every artifact was made from, by which code, with which parameters.

Every artifact is a directory. Its `lineage.json` sits inside it and holds the directory's
own content hash (over every file but the record itself), the hashes of its inputs, the git
commit, parameters, metrics, package versions and who/where/when. An auditor can walk these
records from a served model down to the raw data and recompute each hash.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from cfxray.conventions import LINEAGE_FILE

TRACKED_PACKAGES = ("cfxray", "torch", "torchvision", "numpy", "onnx", "onnxruntime", "kfp", "dvc")
_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_tree(root: str | Path) -> str:
    """Hash of a directory: relative paths and file hashes, sorted, lineage records excluded."""
    root = Path(root)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if path.name == LINEAGE_FILE or "/." in f"/{rel}":
            continue
        digest.update(f"{rel}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def artifact_hash(path: str | Path) -> str:
    path = Path(path)
    return sha256_tree(path) if path.is_dir() else sha256_file(path)


def git_info(cwd: str | Path = ".") -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                              check=True).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (subprocess.CalledProcessError, FileNotFoundError):
        return {"commit": os.environ.get("CFXRAY_GIT_COMMIT"), "dirty": None}
    return {"commit": commit, "dirty": dirty}


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def run_context() -> dict[str, Any]:
    """Where this step ran: container image, KFP run or DVC stage, from the orchestrator's env."""
    return {
        "image": os.environ.get("CFXRAY_IMAGE"),
        "kfp_run_id": os.environ.get("KFP_RUN_ID"),
        "dvc_stage": os.environ.get("CFXRAY_DVC_STAGE"),
        "user": os.environ.get("CFXRAY_USER") or _user(),
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def write_lineage(
    artifact_dir: str | Path,
    kind: str,
    inputs: dict[str, str | Path],
    params: dict[str, Any],
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write `lineage.json` into an artifact directory once its content is final."""
    artifact_dir = Path(artifact_dir)
    record = {
        "kind": kind,
        "sha256": sha256_tree(artifact_dir),
        "inputs": {name: {"path": str(Path(p).resolve()), "sha256": artifact_hash(p)}
                   for name, p in inputs.items()},
        "git": git_info(),
        "params": params,
        "metrics": metrics or {},
        "packages": package_versions(),
        "context": run_context(),
        **(extra or {}),
    }
    (artifact_dir / LINEAGE_FILE).write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
    return record


def read_lineage(artifact_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(artifact_dir) / LINEAGE_FILE).read_text())
