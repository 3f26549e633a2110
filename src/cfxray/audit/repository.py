"""Audit a Triton model repository, or what a running server loaded from it.

Beyond each version's chain (`cfxray.audit.chain`), a repository can break in ways no single
chain shows: a model's `config.pbtxt` (batch size, tensor dims, image size) edited after the
export that wrote it, whose hash that export recorded in the version's `lineage.json`; and a
version set that differs across the four models (an export that published `classifier/2` and
`generator_*/2` but left `explain` at 1). Both are broken links here, and so is a reader
study a version folder lists whose report is gone, changed or made from another study
(`cfxray.audit.studies`).
"""

from __future__ import annotations

import difflib
from pathlib import Path

from cfxray.audit.chain import Walker, search_roots
from cfxray.audit.findings import Audit, Node, Problem
from cfxray.audit.studies import check_studies
from cfxray.contract import CONFIG_FILE, MODEL_NAMES, model_versions
from cfxray.conventions import LINEAGE_FILE
from cfxray.errors import UserError
from cfxray.lineage import read_lineage, sha256_file


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


def check_config(walker: Walker, node: Node, repo: Path, model: str, version: int) -> None:
    """The model's config.pbtxt against the hash its export recorded in this version's record;
    a later export of the same model rewrites the file, so its record may vouch for it too."""
    recorded = (node.record or {}).get("config")
    path = repo / model / CONFIG_FILE
    if node.record is None:
        return  # the missing record is already a broken link
    if not isinstance(recorded, dict) or not recorded.get("sha256"):
        walker.warnings.append(f"{node.link}: its record holds no {CONFIG_FILE} hash (exported "
                               f"before configs were recorded); {path} is not verified")
        return
    if not path.is_file():
        walker.fail(node, node.link, f"{path} is missing: Triton cannot serve {model} without it")
        return
    now = sha256_file(path)
    if now == recorded["sha256"]:
        node.status.append(f"ok {CONFIG_FILE} sha256 {now[:12]} matches this version's record")
        return
    for later in (v for v in model_versions(repo / model) if v > version):
        if _recorded_config_sha(repo / model / str(later)) == now:
            node.status.append(f"ok {CONFIG_FILE} sha256 {now[:12]}, rewritten by the export of "
                               f"{model}/{later}, whose record it matches")
            return
    walker.fail(node, node.link, f"{path} changed since {model}/{version} was exported: sha256 "
                                 f"{recorded['sha256'][:12]} recorded, {now[:12]} now"
                                 f"{_changed_lines(recorded.get('text'), path.read_text())}")


def _recorded_config_sha(version_dir: Path) -> str | None:
    if not (version_dir / LINEAGE_FILE).is_file():
        return None
    try:
        config = read_lineage(version_dir).get("config")
    except ValueError:
        return None
    return config.get("sha256") if isinstance(config, dict) else None


def _changed_lines(recorded: str | None, now: str) -> str:
    """The edited lines, when the record kept the exported text."""
    if not recorded:
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
    nodes = []
    for name, ver in pairs:
        node = walker.version(name, ver, repo / name / str(ver))
        check_config(walker, node, repo, name, ver)
        check_studies(walker, node)
        nodes.append(node)
    audit = walker.finish(nodes)
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
            check_config(walker, node, repo, name, ver)
            check_studies(walker, node)
            if probe:
                _probe(walker, node, url, name, ver)
            nodes.append(node)
    audit = walker.finish(nodes, served={"url": url,
                                         "ready": [f"{n}/{v}" for n, v in sorted(loaded)]})
    if model is None and version is None:
        ready: dict[str, list[int]] = {}
        for name, ver in loaded:
            ready.setdefault(name, []).append(ver)
        problem = version_set_problem(ready, f"the server at {url}")
        if problem:
            audit.problems.append(Problem(url, problem))
    return audit
