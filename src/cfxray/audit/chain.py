"""Walk an artifact's lineage down to the raw data and recompute every hash.

A chain is a graph of artifacts joined by the inputs their `lineage.json` records name:
Triton version folder -> export inputs (classifier, generators, evaluation) -> training runs
-> preprocessed data -> raw dataset (with its DVC hash and revision). Each artifact's own
content hash and each recorded input hash is recomputed; any mismatch, missing record or
missing input becomes a `Problem` naming the broken link, so an auditor sees which step's
output no longer matches what the next step was made from.

`Walker` walks one or more chains and collects what it found into an `Audit`;
`trace_version` and `audit_artifact` are the two walks other modules need (model cards, the
version diff and `cfxray reproduce` read a version's chain; `cfxray audit --artifact` any
artifact's). What only a model repository has (its configs, its version sets, a server) is
checked in `cfxray.audit.repository`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from cfxray.audit.findings import KIND_ROLES, ROLES, Audit, Node, Problem
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

# Inputs that must be one and the same artifact wherever the chain uses them: generators
# trained against another classifier than the one served explain a different model.
SAME_EVERYWHERE = ("classifier", "oracle", "generators", "evaluation")
# Inputs that normally agree; a difference is reported but may be intended.
USUALLY_SAME = ("data",)
# Files of a served version whose hashes the audit lists one by one.
SERVED_FILES = (".onnx", ".plan", ".pt", ".onnx.data")


def search_roots(repo: Path, extra: list[str | Path] | None = None) -> list[Path]:
    """Where recorded inputs are looked for when their recorded absolute path does not exist:
    the `--search` folders, the repository and the folder holding it, the working directory."""
    repo = repo.resolve()
    return [Path(p) for p in (extra or [])] + [repo, repo.parent, Path.cwd()]


class Walker:
    """Walks chains and collects their problems and warnings; `finish` returns the `Audit`.

    Hashes of folders are computed once per walker, so the datasets several versions share are
    hashed once.
    """

    def __init__(self, roots: list[Path]) -> None:
        self.search_roots = roots
        self.problems: list[Problem] = []
        self.warnings: list[str] = []
        self._files_cache: dict[Path, dict[str, str]] = {}
        self._dvc_cache: dict[Path, str] = {}
        self._commits: dict[tuple[str | None, bool | None], list[str]] = {}
        self._visited: dict[Path, Node] = {}
        self._edges: list[tuple[str, str, str]] = []  # (input name, recorded sha256, link)

    # --- the walks ---------------------------------------------------------------------------

    def version(self, model: str, version: int | str, version_dir: Path) -> Node:
        """A model version folder's chain (served, or staged before publishing): every hash,
        every role reached, the same classifier, oracle and generators everywhere."""
        before = self._start()
        link = f"{model}/{version}"
        node = Node(name=link, link=link, path=version_dir)
        self._visit(node, served=True)
        self._check_complete(node, before)
        self._check_consistent(node)
        return node

    def artifact(self, path: Path) -> Node:
        """Any artifact's chain: the same checks below it, without the served-version rule
        that every role be reachable."""
        self._start()
        node = Node(name=path.name, link=str(path), path=path)
        self._visit(node)
        self._check_consistent(node)
        return node

    def fail(self, node: Node, link: str, message: str) -> None:
        node.status.append(f"FAIL {message}")
        self.problems.append(Problem(link, message))

    def finish(self, roots: list[Node], served: dict[str, Any] | None = None) -> Audit:
        """The audit of everything walked, with the code-identity warnings added once."""
        self._check_code()
        return Audit(roots=roots, problems=self.problems, warnings=self.warnings, served=served)

    # --- hashing and finding inputs ------------------------------------------------------------

    def _start(self) -> int:
        """Begin a new chain; returns the problem count so far."""
        self._visited.clear()
        self._edges.clear()
        return len(self.problems)

    def _files_of(self, folder: Path) -> dict[str, str]:
        """Per-file hashes of a folder, computed once per audit (datasets are large)."""
        folder = folder.resolve()
        if folder not in self._files_cache:
            self._files_cache[folder] = file_hashes(folder)
        return self._files_cache[folder]

    def _hash_of(self, path: Path) -> str:
        if path.is_dir():
            return tree_digest(self._files_of(path))
        if (path.parent / LINEAGE_FILE).exists():  # its folder is hashed for its record anyway
            listed = self._files_of(path.parent).get(path.name)
            if listed is not None:
                return listed
        return sha256_file(path)

    def _dvc_md5_of(self, folder: Path) -> str:
        folder = folder.resolve()
        if folder not in self._dvc_cache:
            self._dvc_cache[folder] = dvc_md5_tree(folder)
        return self._dvc_cache[folder]

    def locate(self, recorded: str) -> Path | None:
        """The recorded path, or the same trailing path under a search root (records made in
        a container or on another machine carry that machine's absolute paths). Public for
        what else follows recorded paths (reader studies, `cfxray.study`)."""
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

    # --- one artifact ----------------------------------------------------------------------------

    def _visit(self, node: Node, served: bool = False) -> None:
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
        if node.role is None:
            self.fail(node, node.link, f"lineage record {record_dir / LINEAGE_FILE} has kind "
                                       f"{node.kind!r}, which no cfxray step writes (known: "
                                       f"{', '.join(sorted(KIND_ROLES))})")
        git = node.record.get("git") or {}
        self._commits.setdefault((git.get("commit"), git.get("dirty")), []).append(node.link)
        self._check_content(node, record_dir, served)
        self._check_documents(node, record_dir)
        if node.role == "raw":
            self._check_dvc(node)
        for name, entry in sorted((node.record.get("inputs") or {}).items()):
            child = self._follow(node, name, entry)
            if child is not None:
                node.children.append(child)

    def _check_content(self, node: Node, record_dir: Path, served: bool) -> None:
        record = node.record or {}
        files = self._files_of(record_dir)
        now = tree_digest(files)
        what = "served model version" if served else "content"
        if now == record.get("sha256"):
            node.status.append(f"ok {what} sha256 {now[:12]}")
            if served:
                for rel, digest in files.items():
                    if rel.endswith(SERVED_FILES):
                        node.status.append(f"ok served file {rel} sha256 {digest[:12]}")
            return
        detail = _changed_files(record.get("files"), files)
        self.fail(node, node.link, f"{what} changed since it was recorded in {record_dir}: "
                                   f"sha256 {str(record.get('sha256'))[:12]} recorded, "
                                   f"{now[:12]} now{detail}")

    def _check_documents(self, node: Node, record_dir: Path) -> None:
        for name, digest in ((node.record or {}).get("documents") or {}).items():
            path = record_dir / name
            if not path.exists():
                self.fail(node, node.link, f"document {name} recorded but missing")
            elif sha256_file(path) != digest:
                self.fail(node, node.link, f"document {name} changed since it was written")

    def _check_dvc(self, node: Node) -> None:
        """The raw dataset against its DVC hash: from the DVC project it lives in, else from
        the origin its record notes (a pipeline that fetched it from a DVC repository)."""
        info = dvc_info(node.path)
        origin = _recorded_dvc_origin(node.record or {})
        if info is None and origin:
            # The origin was checked against the DVC hash when fetched; noting it changed the
            # record, which DVC's hash covers, so only the content hash can be rechecked here.
            node.dvc = {**origin, "md5_now": None}
            node.status.append(f"ok DVC md5 {node.dvc['md5']} from {node.dvc['source']} at rev "
                               f"{str(node.dvc['rev'])[:12]}, verified when fetched")
            return
        if info is None:
            self.warnings.append(f"{node.link}: raw dataset {node.path} is not tracked by DVC; "
                                 "its identity rests on the sha256 alone")
            return
        info["md5_now"] = self._dvc_md5_of(node.path) if node.path.is_dir() else None
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

    # --- one edge ------------------------------------------------------------------------------

    def _follow(self, parent: Node, name: str, entry: dict[str, Any]) -> Node | None:
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
        now = self._hash_of(path)
        if now != entry.get("sha256"):
            self.fail(node, link, f"{path} changed since {parent.link} was made from it: "
                                  f"sha256 {str(entry.get('sha256'))[:12]} recorded, "
                                  f"{now[:12]} now")
        else:
            node.status.append(f"ok input sha256 {now[:12]} matches {parent.name}'s record")
        self._check_record_unchanged(node, parent, entry)
        if parent.role == "raw":  # inputs of a raw dataset are external sources: no records
            return node
        key = path.resolve()
        if key in self._visited:
            node.seen_above = True
            node.record = self._visited[key].record
            return node
        self._visited[key] = node
        self._visit(node)
        return node

    def _check_record_unchanged(self, node: Node, parent: Node, entry: dict[str, Any]) -> None:
        """The input's lineage record is the one that existed when the parent was made."""
        recorded = entry.get("record_sha256")
        record = (node.path if node.path.is_dir() else node.path.parent) / LINEAGE_FILE
        if recorded is None or not record.is_file():
            return  # older records lack the hash; a missing record is reported by _visit()
        if sha256_file(record) != recorded:
            self.fail(node, node.link, f"the lineage record {record} was edited after "
                                       f"{parent.link} was made from it (its params, metrics "
                                       "or inputs may no longer be the true ones)")

    # --- the whole chain -----------------------------------------------------------------------

    def _check_complete(self, root: Node, problems_before: int) -> None:
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

    def _check_consistent(self, root: Node) -> None:
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

    def _check_code(self) -> None:
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


def trace_version(version_dir: str | Path,
                  extra_roots: list[str | Path] | None = None) -> Audit:
    """One model version folder's chain. The folder may be staged outside the repository
    (export writes its model card there): its record's `model` and `version` then name it."""
    version_dir = Path(version_dir)
    if not (version_dir / LINEAGE_FILE).is_file():
        raise UserError(f"{version_dir} has no {LINEAGE_FILE}; export the model first")
    try:
        record = read_lineage(version_dir)
    except ValueError as exc:
        raise UserError(f"cannot read {version_dir / LINEAGE_FILE}: {exc}") from exc
    model = str(record.get("model") or version_dir.parent.name)
    version = str(record.get("version") or version_dir.name)
    walker = Walker(search_roots(version_dir.resolve().parent.parent, extra_roots))
    return walker.finish([walker.version(model, version, version_dir)])


def audit_artifact(path: str | Path, extra_roots: list[str | Path] | None = None) -> Audit:
    """Audit any artifact's chain (an evaluation before export, a training run)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"artifact not found: {path}")
    walker = Walker([Path(p) for p in (extra_roots or [])] + [Path.cwd()])
    return walker.finish([walker.artifact(path)])
