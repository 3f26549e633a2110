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
# Documents written about an artifact after its record (model cards) describe it, they are
# not its content: they are left out of its hash and their own hashes go into the record.
# (reader_studies.json: `cfxray.audit.studies`.)
DOCUMENT_FILES = ("model_card.json", "model_card.md", "model_card.html", "reader_studies.json")
# Up to this many files, a record lists each file's hash so an audit can name the one changed.
MAX_LISTED_FILES = 20000
_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_hashes(root: str | Path) -> dict[str, str]:
    """sha256 of every content file under a directory by relative path (records, documents
    and hidden files excluded), in sorted order."""
    root = Path(root)
    hashes: dict[str, str] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if path.name in (LINEAGE_FILE, *DOCUMENT_FILES) or "/." in f"/{rel}":
            continue
        hashes[rel] = sha256_file(path)
    return hashes


def tree_digest(hashes: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for rel in sorted(hashes):
        digest.update(f"{rel}\0{hashes[rel]}\n".encode())
    return digest.hexdigest()


def sha256_tree(root: str | Path) -> str:
    """Hash of a directory: relative paths and file hashes, sorted, lineage records excluded."""
    return tree_digest(file_hashes(root))


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
    files = file_hashes(artifact_dir)
    record = {
        "kind": kind,
        "sha256": tree_digest(files),
        "inputs": {name: _input_entry(p) for name, p in inputs.items()},
        "git": git_info(),
        "params": params,
        "metrics": metrics or {},
        "packages": package_versions(),
        "context": run_context(),
        **(extra or {}),
    }
    if len(files) <= MAX_LISTED_FILES:
        record["files"] = files
    save_lineage(artifact_dir, record)
    return record


def _input_entry(path: str | Path) -> dict[str, Any]:
    """An input's identity: its content hash, its own record's hash (so a record edited
    later, e.g. to improve a metric, is caught downstream) and its DVC hash when tracked."""
    path = Path(path)
    entry: dict[str, Any] = {"path": str(path.resolve()), "sha256": artifact_hash(path)}
    record = (path if path.is_dir() else path.parent) / LINEAGE_FILE
    if record.is_file():
        entry["record_sha256"] = sha256_file(record)
    tracked = dvc_info(path)
    if tracked:
        entry["dvc"] = tracked
    return entry


def save_lineage(artifact_dir: str | Path, record: dict[str, Any]) -> None:
    text = json.dumps(record, indent=2, sort_keys=True, default=str)
    (Path(artifact_dir) / LINEAGE_FILE).write_text(text)


def read_lineage(artifact_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(artifact_dir) / LINEAGE_FILE).read_text())


def record_documents(artifact_dir: str | Path, names: tuple[str, ...] = DOCUMENT_FILES) -> None:
    """Seal documents written after the record (model cards) by adding their hashes to it."""
    artifact_dir = Path(artifact_dir)
    record = read_lineage(artifact_dir)
    record["documents"] = {name: sha256_file(artifact_dir / name)
                           for name in names if (artifact_dir / name).is_file()}
    save_lineage(artifact_dir, record)


def lineage_metadata(record: dict[str, Any]) -> dict[str, Any]:
    """A record as KFP artifact metadata: plain JSON, without the per-file listing."""
    meta = {k: v for k, v in record.items() if k not in ("files", "documents")}
    meta["inputs"] = {name: {k: v for k, v in entry.items() if k != "path"}
                      for name, entry in record.get("inputs", {}).items()}
    return json.loads(json.dumps(meta, default=str))


# --- DVC: the raw dataset's identity is its DVC hash at a git revision -----------------------


def dvc_md5_tree(root: str | Path) -> str:
    """DVC's `.dir` hash of a directory (md5 of the sorted JSON listing of file md5s)."""
    root = Path(root)
    entries = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        md5 = hashlib.md5()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                md5.update(chunk)
        entries.append({"md5": md5.hexdigest(), "relpath": path.relative_to(root).as_posix()})
    entries.sort(key=lambda e: e["relpath"])
    listing = json.dumps(entries, sort_keys=True).encode("utf-8")
    return hashlib.md5(listing).hexdigest() + ".dir"


def dvc_root(path: str | Path) -> Path | None:
    for parent in Path(path).resolve().parents:
        if (parent / ".dvc").is_dir():
            return parent
    return None


def dvc_info(path: str | Path) -> dict[str, Any] | None:
    """How DVC tracks a path: its md5 from `dvc.lock` or a `.dvc` file, and the git revision
    that recorded it; None when DVC does not track it."""
    import yaml

    path = Path(path).resolve()
    root = dvc_root(path)
    if root is None:
        return None
    rel = path.relative_to(root).as_posix()
    found = _dvc_lock_out(root, rel, yaml) or _dvc_file_out(root, path, yaml)
    if found is None:
        return None
    source, out = found
    return {
        "md5": out.get("md5"),
        "nfiles": out.get("nfiles"),
        "source": source,
        "path": rel,
        **_git_revision(root, source.split(":")[0]),
    }


def _dvc_lock_out(root: Path, rel: str, yaml: Any) -> tuple[str, dict[str, Any]] | None:
    lock = root / "dvc.lock"
    if not lock.exists():
        return None
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages") or {}
    for stage, entry in stages.items():
        for out in entry.get("outs") or []:
            if out.get("path") == rel:
                return f"dvc.lock:{stage}", out
    return None


def _dvc_file_out(root: Path, path: Path, yaml: Any) -> tuple[str, dict[str, Any]] | None:
    dvc_file = path.with_name(path.name + ".dvc")
    if not dvc_file.exists():
        return None
    for out in (yaml.safe_load(dvc_file.read_text()) or {}).get("outs") or []:
        if out.get("path") == path.name:
            return dvc_file.relative_to(root).as_posix(), out
    return None


def _git_revision(root: Path, file: str) -> dict[str, Any]:
    """The commit that last changed the file DVC recorded the hash in, and whether the file
    has changed since (then the hash is not yet committed anywhere)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
    try:
        rev = git("log", "-1", "--format=%H", "--", file) or None
        dirty = bool(git("status", "--porcelain", "--", file))
    except (subprocess.CalledProcessError, FileNotFoundError):
        return {"rev": None, "rev_dirty": None}
    return {"rev": rev, "rev_dirty": dirty}
