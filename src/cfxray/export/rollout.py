"""Which version every replica serves: the rollout state, rollback, and retention.

Production runs Triton in POLL mode on the shared repository claim: each replica re-reads the
repository every `--repository-poll-secs` and applies the `version_policy` of each
`config.pbtxt` (load the new version, switch, unload the old, without losing availability).
So one thing decides what every replica serves, the pods the autoscaler adds included: the
policy in the configs. It is rendered from `rollout.json` at the repository root, which only
this module changes: `latest 1` while nothing is pinned (a publish rolls out), `specific [N]`
after `cfxray rollout rollback --to N`. Export re-renders the policy from that file too, so a
rollback survives the next export until `cfxray rollout latest` releases it. The policy is
the one part of a config export does not record for the audit, which checks it against
`rollout.json` instead: a rollback is no edit of the exported configs.

Every write is one rename (config files, the state, version folders moved out before they
are deleted), so a replica polling mid-change sees each file either before or after it.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cfxray.contract import (
    CONFIG_FILE,
    CUSTOM_CONFIG_DIR,
    MODEL_NAMES,
    ROLLOUT_FILE,
    config_to_text,
    model_versions,
    parse_config,
    read_rollout,
    set_version_policy,
)
from cfxray.errors import UserError
from cfxray.export.model_repository import repository_lock
from cfxray.export.triton_config import write_file

HISTORY_KEPT = 50


def served_version(repo: str | Path) -> int | None:
    """The pinned version, or None: serve the newest version present."""
    return read_rollout(repo)["pinned"]


def _models(repo: Path) -> list[Path]:
    return [repo / name for name in MODEL_NAMES if (repo / name / CONFIG_FILE).exists()]


def complete_versions(repo: str | Path) -> list[int]:
    """Versions present in every model of the repository (a consistent set)."""
    models = _models(Path(repo))
    if not models:
        return []
    common = set(model_versions(models[0]))
    for model in models[1:]:
        common &= set(model_versions(model))
    return sorted(common)


def status(repo: str | Path) -> dict[str, Any]:
    repo = Path(repo)
    present = complete_versions(repo)
    state = read_rollout(repo)
    pinned = state["pinned"]
    return {"repository": str(repo), "versions": present,
            "latest": present[-1] if present else None, "pinned": pinned,
            "served": pinned if pinned is not None else (present[-1] if present else None),
            "history": state["history"][-5:]}


def set_served(repo: str | Path, version: int | None, action: str) -> dict[str, Any]:
    """Pin `version` (None: release the pin, serve the newest) on every model at once."""
    repo = Path(repo)
    if not _models(repo):
        raise UserError(f"{repo} holds no cfxray models; run `cfxray export --out {repo}`")
    with repository_lock(repo):
        before = status(repo)
        if version is not None and version not in before["versions"]:
            raise UserError(f"version {version} is not in every model of {repo} (present: "
                            f"{before['versions'] or 'none'}); retention may have removed it")
        state = read_rollout(repo)
        state["pinned"] = version
        state["history"] = [*state["history"], {
            "at": datetime.now(UTC).isoformat(timespec="seconds"), "action": action,
            "from": before["served"], "to": version if version is not None else before["latest"],
            "pinned": version is not None, "by": _user()}][-HISTORY_KEPT:]
        write_file(repo / ROLLOUT_FILE, (json.dumps(state, indent=2) + "\n").encode())
        render_policies(repo, version)
        return status(repo)


def render_policies(repo: Path, version: int | None) -> None:
    """Set the version policy of every config file of every model (custom configs too)."""
    for model in _models(repo):
        for path in [model / CONFIG_FILE, *sorted((model / CUSTOM_CONFIG_DIR).glob("*.pbtxt"))]:
            text = path.read_text()
            header = "".join(line for line in text.splitlines(keepends=True)
                             if line.startswith("#"))
            config = parse_config(text)
            set_version_policy(config, version)
            write_file(path, (header + config_to_text(config)).encode())


def prune(repo: str | Path, keep: int) -> list[int]:
    """Remove all but the newest `keep` versions of every model; never the pinned one.

    Each folder is first renamed out of Triton's sight (a non-numeric name), then deleted.
    """
    repo = Path(repo)
    with repository_lock(repo):
        return _prune(repo, keep)


def _prune(repo: Path, keep: int) -> list[int]:
    pinned = served_version(repo)
    removed: set[int] = set()
    for model in _models(repo):
        present = model_versions(model)
        for version in present[:-keep] if keep < len(present) else []:
            if version == pinned:
                continue
            doomed = model / f".pruned-{version}-{os.getpid()}"
            os.rename(model / str(version), doomed)
            shutil.rmtree(doomed)
            removed.add(version)
    return sorted(removed)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
