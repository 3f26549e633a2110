"""Audit a Triton model repository, or what a running server loaded from it.

Beyond each version's chain (`cfxray.audit.chain`), a repository can break in ways no single
chain shows: a file export writes in a model folder (`config.pbtxt`, `configs/gpu.pbtxt`, the
warm-up data) edited after the export that recorded it in the version's `lineage.json`; a
version policy that is not the one `rollout.json` renders; and a version set that differs
across the four models (an export that published `classifier/2` and `generator_*/2` but left
`explain` at 1). All are broken links here, and so is a reader study a version folder lists
whose report is gone, changed or made from another study (`cfxray.audit.studies`).

A config is recorded and compared without its comments and version policy: the policy is the
rollout state's (`cfxray rollout rollback` rewrites it in every config, a legitimate change),
so it is checked against `rollout.json` instead, and everything else a server reads (batch
sizes, tensors, instances, warm-up, parameters) against the export's record.
"""

from __future__ import annotations

import difflib
import hashlib
from pathlib import Path
from typing import Any

from cfxray.audit.chain import Walker, search_roots
from cfxray.audit.findings import Audit, Node, Problem
from cfxray.audit.studies import check_studies
from cfxray.contract import (
    CONFIG_FILE,
    CUSTOM_CONFIG_DIR,
    MODEL_NAMES,
    ROLLOUT_FILE,
    config_schema,
    config_to_text,
    model_versions,
    parse_config,
    read_rollout,
    set_version_policy,
)
from cfxray.conventions import LINEAGE_FILE
from cfxray.errors import UserError
from cfxray.lineage import read_lineage


def model_names(repo: Path) -> list[str]:
    return sorted(p.name for p in repo.iterdir() if p.is_dir() and model_versions(p))


def resolve_versions(repo: Path, model: str | None, version: int | None) -> list[tuple[str, int]]:
    """(model, version) pairs to audit: the named model or all, the named version or latest.
    A model without the named version is left out here; `version_set_problem` names it."""
    if not repo.is_dir():
        raise UserError(f"model repository not found: {repo}")
    names = [model] if model else model_names(repo)
    if not names:
        raise UserError(f"{repo} holds no Triton model with an integer version folder")
    pairs = []
    for name in names:
        available = model_versions(repo / name)
        if not available:
            raise UserError(f"model {name!r} has no version folder in {repo}")
        if version is not None and version not in available:
            if model:
                raise UserError(f"model {name!r} has no version {version} in {repo} "
                                f"(versions: {', '.join(map(str, available))})")
            continue
        pairs.append((name, version if version is not None else available[-1]))
    if not pairs:
        raise UserError(f"no model in {repo} has version {version}")
    return pairs


def version_set_problem(chosen: dict[str, list[int]], where: str) -> str | None:
    """What is wrong with the versions chosen per model (the latest, a named one, or those a
    server has ready) when one export's models do not all have the same ones."""
    sets = {name: sorted(chosen.get(name, [])) for name in MODEL_NAMES}
    if len({tuple(v) for v in sets.values()}) <= 1:
        return None
    listed = ", ".join(f"{name}/{'+'.join(map(str, v))}" if v else f"{name} (none)"
                       for name, v in sets.items())
    return (f"{where} has a version set that differs across models: {listed}; one export "
            "publishes all four models as one version (a failed or partial publish?)")


# The key of a version's lineage.json that records the files its export wrote in the model
# folder beside the version folders: {path relative to the model folder: file_record(...)}.
MODEL_FILES = "model_files"


def file_record(relative: str, data: bytes) -> dict[str, str]:
    """What export records of a file it writes in a model folder, and what the audit compares:
    for a config, its text without comments and version policy and that text's sha256 (a
    ValueError when it is no Triton config); for any other file, its sha256."""
    if not relative.endswith(".pbtxt"):
        return {"sha256": hashlib.sha256(data).hexdigest()}
    config = parse_config(data.decode())
    config.ClearField("version_policy")
    text = config_to_text(config)
    return {"sha256": hashlib.sha256(text.encode()).hexdigest(), "text": text}


def expected_policy(repo: Path) -> tuple[Any | None, str | None]:
    """The version policy `rollout.json` renders into every config, or why it cannot be read."""
    try:
        pinned = read_rollout(repo)["pinned"]
    except UserError as exc:
        return None, str(exc)
    config = config_schema().ModelConfig()
    set_version_policy(config, pinned)
    return config.version_policy, None


def _describe_policy(policy: Any) -> str:
    choice = policy.WhichOneof("policy_choice")
    if choice == "latest":
        return f"latest {policy.latest.num_versions}"
    if choice == "specific":
        return f"specific {list(policy.specific.versions)}"
    return choice or "none"


def check_config(walker: Walker, node: Node, repo: Path, model: str, version: int,
                 policy: Any | None) -> None:
    """The files export wrote in the model folder against this version's record (a later
    export of the same model rewrites them, so its record may vouch for them too), each
    config's version policy against `policy` (rollout.json's; None: not checked), and no
    custom config that no export wrote."""
    if node.record is None:
        return  # the missing record is already a broken link
    recorded = node.record.get(MODEL_FILES)
    model_dir = repo / model
    if not isinstance(recorded, dict) or not recorded:
        walker.warnings.append(f"{node.link}: its record holds no {CONFIG_FILE} hash (exported "
                               f"before configs were recorded); {model_dir / CONFIG_FILE} is "
                               "not verified")
        return
    later = [v for v in model_versions(model_dir) if v > version]
    policies_ok = True
    for relative in sorted(recorded):
        policies_ok &= _check_file(walker, node, model_dir, relative, version,
                                   recorded[relative], later, policy)
    if policy is not None and policies_ok:
        node.status.append(f"ok version policy {_describe_policy(policy)} in every config, as "
                           f"{ROLLOUT_FILE} says")
    for path in sorted((model_dir / CUSTOM_CONFIG_DIR).glob("*.pbtxt")):
        relative = f"{CUSTOM_CONFIG_DIR}/{path.name}"
        if relative not in recorded and not any(
                _recorded_file(model_dir / str(v), relative) for v in later):
            walker.fail(node, node.link, f"{path} was written by no export of {model} (a server "
                                         f"started with --model-config-name={path.stem} would "
                                         "serve a config nobody recorded)")


def _check_file(walker: Walker, node: Node, model_dir: Path, relative: str, version: int,
                recorded: Any, later: list[int], policy: Any | None) -> bool:
    """One file `version`'s record names; False when its version policy is not `policy`."""
    path, model = model_dir / relative, model_dir.name
    if not isinstance(recorded, dict) or not recorded.get("sha256"):
        walker.fail(node, node.link, f"its record of {relative} holds no sha256")
        return True
    if not path.is_file():
        walker.fail(node, node.link, f"{path} is missing: Triton cannot serve {model} as "
                                     "exported without it")
        return True
    data = path.read_bytes()
    try:
        now = file_record(relative, data)
    except ValueError as exc:
        walker.fail(node, node.link, f"{path} is no Triton config: {exc}")
        return True
    policy_ok = True
    if policy is not None and "text" in now:
        served = parse_config(data.decode()).version_policy
        if served != policy:
            policy_ok = False
            walker.fail(node, node.link, f"{path} has version policy {_describe_policy(served)}, "
                                         f"{ROLLOUT_FILE} renders {_describe_policy(policy)}: "
                                         "edited by hand? (`cfxray rollout` sets it)")
    sha = now["sha256"]
    if sha == recorded["sha256"]:
        node.status.append(f"ok {relative} sha256 {sha[:12]} matches this version's record")
        return policy_ok
    for later_version in later:
        if _recorded_file(model_dir / str(later_version), relative) == sha:
            node.status.append(f"ok {relative} sha256 {sha[:12]}, rewritten by the export of "
                               f"{model}/{later_version}, whose record it matches")
            return policy_ok
    walker.fail(node, node.link, f"{path} changed since {model}/{version} was exported: sha256 "
                                 f"{recorded['sha256'][:12]} recorded, {sha[:12]} now"
                                 f"{_changed_lines(recorded.get('text'), now.get('text'))}")
    return policy_ok


def _recorded_file(version_dir: Path, relative: str) -> str | None:
    """The sha256 a version's record holds for a model-folder file, if any."""
    if not (version_dir / LINEAGE_FILE).is_file():
        return None
    try:
        files = read_lineage(version_dir).get(MODEL_FILES)
    except ValueError:
        return None
    entry = files.get(relative) if isinstance(files, dict) else None
    return entry.get("sha256") if isinstance(entry, dict) else None


def _changed_lines(recorded: str | None, now: str | None) -> str:
    """The edited lines, when the record kept the exported text."""
    if not recorded or now is None:
        return ""
    diff = [line for line in difflib.ndiff(recorded.splitlines(), now.splitlines())
            if line[:2] in ("- ", "+ ") and line[2:].strip()]
    shown = [f"{'was' if line[0] == '-' else 'now'} {line[2:].strip()!r}" for line in diff[:6]]
    return f" ({'; '.join(shown)}{' ...' if len(diff) > 6 else ''})" if shown else ""


def audit_repository(
    repo: str | Path,
    model: str | None = None,
    version: int | None = None,
    extra_roots: list[str | Path] | None = None,
) -> Audit:
    """Audit the chain and config of each selected model version in a model repository and,
    auditing every model, that they form one version set."""
    repo = Path(repo)
    pairs = resolve_versions(repo, model, version)
    walker = Walker(search_roots(repo, extra_roots))
    policy, rollout_problem = expected_policy(repo)
    nodes = []
    for name, ver in pairs:
        node = walker.version(name, ver, repo / name / str(ver))
        check_config(walker, node, repo, name, ver, policy)
        check_studies(walker, node)
        nodes.append(node)
    audit = walker.finish(nodes)
    if rollout_problem:
        audit.problems.append(Problem(str(repo / ROLLOUT_FILE), rollout_problem))
    if model is None:
        chosen = {name: [ver] for name, ver in pairs}
        problem = version_set_problem(chosen, f"the model repository {repo}")
        if problem:
            audit.problems.append(Problem(str(repo), problem))
    return audit


def _probe(walker: Walker, node: Node, url: str, model: str, version: int) -> None:
    """Compare the served model's answers with the recorded ONNX file's (see triton.py)."""
    from cfxray.audit.triton import probe_served_model

    onnx_files = sorted(node.path.glob("*.onnx"))
    if not onnx_files:
        walker.warnings.append(f"{node.link}: no ONNX file in {node.path}; not probed")
        return
    try:
        problem = probe_served_model(url, model, version, onnx_files[0])
    except UserError as exc:
        problem = f"probing the served model failed: {exc}"
    if problem:
        walker.fail(node, node.link, problem)
    else:
        node.status.append(f"ok served model answers a fixed probe exactly as "
                           f"{onnx_files[0].name} does")


def audit_served(
    url: str,
    repo: str | Path,
    model: str | None = None,
    version: int | None = None,
    extra_roots: list[str | Path] | None = None,
    probe: bool = True,
) -> Audit:
    """Audit what a running Triton server has loaded: ask it which versions are ready, then
    audit those folders of the repository it serves from, and (probe) check that the server
    answers like the recorded ONNX files; a served version the repository (or its record)
    does not back is a broken link, and so is a ready set that differs across models."""
    from cfxray.audit.triton import loaded_versions

    loaded = loaded_versions(url)
    names = [model] if model else sorted({name for name, _ in loaded})
    if model and not any(name == model for name, _ in loaded):
        raise UserError(f"the server at {url} has no ready version of model {model!r} "
                        f"(ready: {', '.join(sorted(f'{n}/{v}' for n, v in loaded)) or 'none'})")
    repo = Path(repo)
    walker = Walker(search_roots(repo, extra_roots))
    policy, rollout_problem = expected_policy(repo)
    nodes = []
    for name in names:
        served = sorted(v for n, v in loaded if n == name)
        if version is not None:
            if version not in served:
                raise UserError(f"the server at {url} does not serve {name} version {version} "
                                f"(ready: {', '.join(map(str, served)) or 'none'})")
            served = [version]
        for ver in served:
            version_dir = repo / name / str(ver)
            if not version_dir.is_dir():
                node = Node(name=f"{name}/{ver}", link=f"{name}/{ver}", path=version_dir)
                walker.fail(node, node.link, f"served by {url} but not in the repository {repo}")
                nodes.append(node)
                continue
            node = walker.version(name, ver, version_dir)
            check_config(walker, node, repo, name, ver, policy)
            check_studies(walker, node)
            if probe:
                _probe(walker, node, url, name, ver)
            nodes.append(node)
    audit = walker.finish(nodes, served={"url": url,
                                         "ready": [f"{n}/{v}" for n, v in sorted(loaded)]})
    if rollout_problem:
        audit.problems.append(Problem(str(repo / ROLLOUT_FILE), rollout_problem))
    if model is None and version is None:
        ready: dict[str, list[int]] = {}
        for name, ver in loaded:
            ready.setdefault(name, []).append(ver)
        problem = version_set_problem(ready, f"the server at {url}")
        if problem:
            audit.problems.append(Problem(url, problem))
    return audit
