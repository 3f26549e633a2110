"""Walk a served model version's lineage down to the raw data and recompute every hash.

A chain is a graph of artifacts joined by the inputs their `lineage.json` records name:
Triton version folder -> export inputs (classifier, generators, evaluation) -> training runs
-> preprocessed data -> raw dataset (with its DVC hash and revision). Each artifact's own
content hash and each recorded input hash is recomputed; any mismatch, missing record or
missing input becomes a `Problem` naming the broken link, so an auditor sees which step's
output no longer matches what the next step was made from.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cfxray.conventions import LINEAGE_FILE
from cfxray.errors import UserError
from cfxray.lineage import (
    dvc_info,
    dvc_md5_tree,
    file_hashes,
    read_lineage,
    sha256_file,
    tree_digest,
)

# Roles along the chain, in the order a served model depends on them.
ROLES = ("export", "evaluation", "cyclegan", "classifier", "prepared", "raw")
# What a role is recognised by in a record's `kind` (first match wins).
_ROLE_WORDS = (
    ("export", ("serving", "export", "triton", "model_repository", "onnx")),
    ("evaluation", ("eval",)),
    ("cyclegan", ("cyclegan", "generator")),
    ("classifier", ("classifier", "oracle")),
    ("prepared", ("prepro", "prepared")),
    ("raw", ("phantom", "ingest", "raw", "dataset")),
    ("study", ("study",)),  # a reader study made from a served version (cfxray.study)
)


# Inputs that must be one and the same artifact wherever the chain uses them: generators
# trained against another classifier than the one served explain a different model.
SAME_EVERYWHERE = ("classifier", "oracle", "generators", "evaluation")
# Inputs that normally agree; a difference is reported but may be intended.
USUALLY_SAME = ("data",)


def role_of(kind: str | None) -> str | None:
    kind = (kind or "").lower()
    for role, words in _ROLE_WORDS:
        if any(word in kind for word in words):
            return role
    return None


@dataclass
class Problem:
    link: str  # which artifact or edge broke, e.g. "classifier/2 -> evaluation"
    message: str

    def __str__(self) -> str:
        return f"{self.link}: {self.message}"


@dataclass
class Node:
    """One artifact on the chain and what the audit found about it."""

    name: str  # the input name that led here ("classifier", "data"), or the served model
    link: str  # path of input names from the served version, for messages and diffs
    path: Path
    record: dict[str, Any] | None = None
    role: str | None = None
    status: list[str] = field(default_factory=list)  # "ok ..." or "FAIL ..." lines
    children: list[Node] = field(default_factory=list)
    seen_above: bool = False  # reached again through another input; shown once
    dvc: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return not any(s.startswith("FAIL") for s in self.status)

    def to_dict(self) -> dict[str, Any]:
        record = self.record or {}
        return {
            "name": self.name,
            "link": self.link,
            "path": str(self.path),
            "kind": record.get("kind"),
            "role": self.role,
            "sha256": record.get("sha256"),
            "git": record.get("git"),
            "created_utc": (record.get("context") or {}).get("created_utc"),
            "dvc": self.dvc,
            "ok": self.ok,
            "status": self.status,
            "seen_above": self.seen_above,
            "inputs": [child.to_dict() for child in self.children],
        }


@dataclass
class Audit:
    roots: list[Node]
    problems: list[Problem]
    warnings: list[str]
    served: dict[str, Any] | None = None  # what the Triton server reported, in --url mode

    @property
    def ok(self) -> bool:
        return not self.problems

    def nodes(self) -> list[Node]:
        """Every distinct artifact, breadth first (so each is named by its shortest link)."""
        out, queue = [], list(self.roots)
        while queue:
            node = queue.pop(0)
            if not node.seen_above:
                out.append(node)
            queue.extend(node.children)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "problems": [{"link": p.link, "message": p.message} for p in self.problems],
            "warnings": self.warnings,
            "served": self.served,
            "models": [root.to_dict() for root in self.roots],
        }


# --- model repository ------------------------------------------------------------------------


def model_names(repo: Path) -> list[str]:
    return sorted(p.name for p in repo.iterdir() if p.is_dir() and versions_of(p))


def versions_of(model_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def resolve_versions(repo: Path, model: str | None, version: int | None) -> list[tuple[str, int]]:
    """(model, version) pairs to audit: the named model or all, the named version or latest."""
    if not repo.is_dir():
        raise UserError(f"model repository not found: {repo}")
    names = [model] if model else model_names(repo)
    if not names:
        raise UserError(f"{repo} holds no Triton model with an integer version folder")
    pairs = []
    for name in names:
        available = versions_of(repo / name) if (repo / name).is_dir() else []
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


# --- the walk --------------------------------------------------------------------------------


class _Walker:
    def __init__(self, search_roots: list[Path]) -> None:
        self.search_roots = search_roots
        self.problems: list[Problem] = []
        self.warnings: list[str] = []
        self._files_cache: dict[Path, dict[str, str]] = {}
        self._dvc_cache: dict[Path, str] = {}
        self._commits: dict[tuple[str | None, bool | None], list[str]] = {}
        self._visited: dict[Path, Node] = {}
        self._edges: list[tuple[str, str, str]] = []  # (input name, recorded sha256, link)

    def start(self) -> int:
        """Begin a new served version; returns the problem count so far."""
        self._visited.clear()
        self._edges.clear()
        return len(self.problems)

    def fail(self, node: Node, link: str, message: str) -> None:
        node.status.append(f"FAIL {message}")
        self.problems.append(Problem(link, message))

    def files_of(self, folder: Path) -> dict[str, str]:
        """Per-file hashes of a folder, computed once per audit (datasets are large)."""
        folder = folder.resolve()
        if folder not in self._files_cache:
            self._files_cache[folder] = file_hashes(folder)
        return self._files_cache[folder]

    def hash_of(self, path: Path) -> str:
        if path.is_dir():
            return tree_digest(self.files_of(path))
        if (path.parent / LINEAGE_FILE).exists():  # its folder is hashed for its record anyway
            listed = self.files_of(path.parent).get(path.name)
            if listed is not None:
                return listed
        return sha256_file(path)

    def dvc_md5_of(self, folder: Path) -> str:
        folder = folder.resolve()
        if folder not in self._dvc_cache:
            self._dvc_cache[folder] = dvc_md5_tree(folder)
        return self._dvc_cache[folder]

    def locate(self, recorded: str) -> Path | None:
        """The recorded path, or the same trailing path under a search root (records made in
        a container or on another machine carry that machine's absolute paths)."""
        path = Path(recorded)
        if path.exists():
            return path
        parts = path.parts[1:] if path.is_absolute() else path.parts
        for k in range(len(parts), 0, -1):
            for root in self.search_roots:
                candidate = root.joinpath(*parts[-k:])
                if candidate.exists():
                    return candidate
        return None

    # A served version folder is the root; everything else is reached through inputs.
    def served(self, model: str, version: int | str, version_dir: Path) -> Node:
        link = f"{model}/{version}"
        node = Node(name=link, link=link, path=version_dir)
        self.visit(node, served=True)
        self.check_studies(node)
        return node

    def check_studies(self, node: Node) -> None:
        """The reader studies recorded for a version still match their reports."""
        from cfxray.audit.studies import check_studies

        for ok, message in check_studies(node.path, self.locate):
            if ok:
                node.status.append(f"ok {message}")
            else:
                self.fail(node, node.link, message)

    def visit(self, node: Node, served: bool = False) -> None:
        record_dir = node.path if node.path.is_dir() else node.path.parent
        if not (record_dir / LINEAGE_FILE).exists():
            self.fail(node, node.link, f"lineage record missing: {record_dir / LINEAGE_FILE}")
            return
        try:
            node.record = read_lineage(record_dir)
        except ValueError as exc:
            self.fail(node, node.link, f"lineage record unreadable ({record_dir / LINEAGE_FILE}): "
                                       f"{exc}")
            return
        node.role = role_of(node.record.get("kind"))
        git = node.record.get("git") or {}
        self._commits.setdefault((git.get("commit"), git.get("dirty")), []).append(node.link)
        self.check_content(node, record_dir, served)
        self.check_documents(node, record_dir)
        if node.role == "raw":
            self.check_dvc(node)
        for name, entry in sorted((node.record.get("inputs") or {}).items()):
            child = self.follow(node, name, entry)
            if child is not None:
                node.children.append(child)

    def check_content(self, node: Node, record_dir: Path, served: bool) -> None:
        record = node.record or {}
        files = self.files_of(record_dir)
        now = tree_digest(files)
        what = "served model version" if served else "content"
        if now == record.get("sha256"):
            node.status.append(f"ok {what} sha256 {now[:12]}")
            if served:
                for rel, digest in files.items():
                    if rel.endswith((".onnx", ".plan", ".pt", ".onnx.data")):
                        node.status.append(f"ok served file {rel} sha256 {digest[:12]}")
            return
        detail = _changed_files(record.get("files"), files)
        self.fail(node, node.link, f"{what} changed since it was recorded in {record_dir}: "
                                   f"sha256 {str(record.get('sha256'))[:12]} recorded, "
                                   f"{now[:12]} now{detail}")

    def check_documents(self, node: Node, record_dir: Path) -> None:
        for name, digest in ((node.record or {}).get("documents") or {}).items():
            path = record_dir / name
            if not path.exists():
                self.fail(node, node.link, f"document {name} recorded but missing")
            elif sha256_file(path) != digest:
                self.fail(node, node.link, f"document {name} changed since it was written")

    def check_dvc(self, node: Node) -> None:
        """The raw dataset against its DVC hash: from the DVC project it lives in, else from
        the origin its record notes (a pipeline that fetched it from a DVC repository)."""
        info = dvc_info(node.path)
        if info is None and _recorded_dvc_origin(node.record or {}):
            # The origin was checked against the DVC hash when fetched; noting it changed the
            # record, which DVC's hash covers, so only the content hash can be rechecked here.
            node.dvc = {**_recorded_dvc_origin(node.record or {}), "md5_now": None}
            node.status.append(f"ok DVC md5 {node.dvc['md5']} from {node.dvc['source']} at rev "
                               f"{str(node.dvc['rev'])[:12]}, verified when fetched")
            return
        if info is None:
            self.warnings.append(f"{node.link}: raw dataset {node.path} is not tracked by DVC; "
                                 "its identity rests on the sha256 alone")
            return
        info["md5_now"] = self.dvc_md5_of(node.path) if node.path.is_dir() else None
        node.dvc = info
        rev = (info.get("rev") or "uncommitted")[:12]
        if info["md5_now"] is not None and info["md5_now"] != info.get("md5"):
            self.fail(node, node.link, f"raw dataset {node.path} differs from its DVC hash "
                                       f"({info['source']} md5 {info.get('md5')}, now "
                                       f"{info['md5_now']}); `dvc status` shows what changed")
        else:
            node.status.append(f"ok DVC md5 {info.get('md5')} ({info['source']} at rev {rev})")
        if info.get("rev") is None or info.get("rev_dirty"):
            self.warnings.append(f"{node.link}: the DVC hash in {info['source']} is not committed "
                                 "to git, so no revision pins this dataset")

    def follow(self, parent: Node, name: str, entry: dict[str, Any]) -> Node | None:
        link = f"{parent.link} -> {name}"
        self._edges.append((name, str(entry.get("sha256")), link))
        recorded_path = str(entry.get("path") or "")
        path = self.locate(recorded_path) if recorded_path else None
        if path is None:
            if parent.role == "raw":  # an ingested source folder may be gone; data is kept
                self.warnings.append(f"{link}: source {recorded_path} no longer exists")
                return None
            node = Node(name=name, link=link, path=Path(recorded_path or name))
            self.fail(node, link, f"input not found: {recorded_path or '(no path recorded)'}")
            return node
        node = Node(name=name, link=link, path=path)
        now = self.hash_of(path)
        if now != entry.get("sha256"):
            self.fail(node, link, f"{path} changed since {parent.link} was made from it: "
                                  f"sha256 {str(entry.get('sha256'))[:12]} recorded, "
                                  f"{now[:12]} now")
        else:
            node.status.append(f"ok input sha256 {now[:12]} matches {parent.name}'s record")
        self.check_record_unchanged(node, parent, entry)
        if parent.role == "raw":  # inputs of a raw dataset are external sources: no records
            return node
        key = path.resolve()
        if key in self._visited:
            node.seen_above = True
            node.record, node.role = self._visited[key].record, self._visited[key].role
            return node
        self._visited[key] = node
        self.visit(node)
        return node

    def check_record_unchanged(self, node: Node, parent: Node, entry: dict[str, Any]) -> None:
        """The input's lineage record is the one that existed when the parent was made."""
        recorded = entry.get("record_sha256")
        record = (node.path if node.path.is_dir() else node.path.parent) / LINEAGE_FILE
        if recorded is None or not record.is_file():
            return  # older records lack the hash; a missing record is reported by visit()
        if sha256_file(record) != recorded:
            self.fail(node, node.link, f"the lineage record {record} was edited after "
                                       f"{parent.link} was made from it (its params, metrics "
                                       "or inputs may no longer be the true ones)")

    def check_complete(self, root: Node, problems_before: int) -> None:
        """A served version must reach every role; a missing one is a gap in the evidence.
        Only checked on an otherwise sound chain, where a break does not already explain it."""
        if len(self.problems) > problems_before:
            return
        reached, queue = set(), [root]
        while queue:
            node = queue.pop()
            reached.add(node.role)
            queue.extend(node.children)
        for role in ROLES:
            if role not in reached:
                self.fail(root, root.link, f"chain incomplete: no {role} record is reachable "
                                           "from this version's lineage")

    def check_code(self) -> None:
        """Code identity: warn where a record cannot lead back to its code through git."""
        for (commit, dirty), links in sorted(self._commits.items(), key=str):
            where = f"{links[0]}" + (f" and {len(links) - 1} more" if len(links) > 1 else "")
            if commit is None:
                self.warnings.append(f"{where}: made outside a git checkout; the code version "
                                     "is unknown")
            elif dirty:
                self.warnings.append(f"{where}: made from git {commit[:12]} with uncommitted "
                                     "changes; that code cannot be recovered from git alone")
            elif not _commit_known(commit):
                self.warnings.append(f"{where}: git commit {commit[:12]} is not in this "
                                     "repository (fetch it to inspect the code)")

    def check_consistent(self, root: Node) -> None:
        """Every use of the classifier (export, CycleGAN, evaluation) names the same one."""
        for name in SAME_EVERYWHERE + USUALLY_SAME:
            uses = [(sha, link) for n, sha, link in self._edges if n == name]
            if len({sha for sha, _ in uses}) <= 1:
                continue
            listed = "; ".join(f"{link} is {sha[:12]}" for sha, link in uses)
            message = f"the chain uses different {name} artifacts: {listed}"
            if name in SAME_EVERYWHERE:
                self.fail(root, root.link, message)
            else:
                self.warnings.append(f"{root.link}: {message}")


def _commit_known(commit: str) -> bool:
    try:
        subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], check=True,
                       capture_output=True)
    except (subprocess.CalledProcessError, FileNotFoundError):
        return False
    return True


def _recorded_dvc_origin(record: dict[str, Any]) -> dict[str, Any] | None:
    origin = record.get("dvc")
    if not isinstance(origin, dict) or not origin.get("md5"):
        return None
    return {"md5": origin["md5"], "nfiles": origin.get("nfiles"), "path": origin.get("path"),
            "source": f"{origin.get('repo_url')}:{origin.get('path')} (recorded origin)",
            "rev": origin.get("rev") or None, "rev_dirty": bool(origin.get("workspace"))}


def _changed_files(recorded: dict[str, str] | None, now: dict[str, str]) -> str:
    if recorded is None:
        return ""
    changed = sorted(k for k in recorded.keys() & now.keys() if recorded[k] != now[k])
    removed = sorted(recorded.keys() - now.keys())
    added = sorted(now.keys() - recorded.keys())
    parts = [f"{label} {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}"
             for label, names in (("changed", changed), ("removed", removed), ("added", added))
             if names]
    return f" ({'; '.join(parts)})" if parts else ""


def audit_repository(
    repo: str | Path,
    model: str | None = None,
    version: int | None = None,
    search_roots: list[str | Path] | None = None,
) -> Audit:
    """Audit the chain of each selected model version in a Triton model repository."""
    repo = Path(repo)
    roots = [Path(p) for p in (search_roots or [])] + [repo.resolve().parent, Path.cwd()]
    walker = _Walker(roots)
    nodes = []
    for name, ver in resolve_versions(repo, model, version):
        before = walker.start()
        node = walker.served(name, ver, repo / name / str(ver))
        walker.check_complete(node, before)
        walker.check_consistent(node)
        nodes.append(node)
    walker.check_code()
    return Audit(roots=nodes, problems=walker.problems, warnings=walker.warnings)


def audit_artifact(path: str | Path, search_roots: list[str | Path] | None = None) -> Audit:
    """Audit any artifact's chain (an evaluation before export, a training run): the same
    checks below it, without the served-version completeness rule."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"artifact not found: {path}")
    walker = _Walker([Path(p) for p in (search_roots or [])] + [Path.cwd()])
    walker.start()
    node = Node(name=path.name, link=str(path), path=path)
    walker.visit(node)
    walker.check_consistent(node)
    walker.check_code()
    return Audit(roots=[node], problems=walker.problems, warnings=walker.warnings)


def _probe(walker: _Walker, node: Node, url: str, model: str, version: int) -> None:
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
    search_roots: list[str | Path] | None = None,
    probe: bool = True,
) -> Audit:
    """Audit what a running Triton server has loaded: ask it which versions are ready, then
    audit those folders of the repository it serves from, and (probe) check that the server
    answers like the recorded ONNX files; a served version the repository (or its record)
    does not back is a broken link."""
    from cfxray.audit.triton import loaded_versions

    loaded = loaded_versions(url)
    names = [model] if model else sorted({name for name, _ in loaded})
    if model and not any(name == model for name, _ in loaded):
        raise UserError(f"the server at {url} has no ready version of model {model!r} "
                        f"(ready: {', '.join(sorted(f'{n}/{v}' for n, v in loaded)) or 'none'})")
    repo = Path(repo)
    roots = [Path(p) for p in (search_roots or [])] + [repo.resolve().parent, Path.cwd()]
    walker = _Walker(roots)
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
            before = walker.start()
            node = walker.served(name, ver, version_dir)
            if probe:
                _probe(walker, node, url, name, ver)
            walker.check_complete(node, before)
            walker.check_consistent(node)
            nodes.append(node)
    walker.check_code()
    served_info = {"url": url, "ready": [f"{n}/{v}" for n, v in sorted(loaded)]}
    return Audit(roots=nodes, problems=walker.problems, warnings=walker.warnings,
                 served=served_info)
