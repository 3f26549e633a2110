"""What changed between two published versions: data, code, parameters and metrics.

Each version's chain is flattened into four sections keyed by the input path that reaches an
artifact from the served version ("evaluation > data"); the diff lists every key whose value
differs, so "why is v3 better than v2" has a short, complete answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cfxray.audit.chain import trace_version
from cfxray.audit.findings import Audit, Node
from cfxray.errors import UserError

SECTIONS = ("data", "code", "params", "metrics")


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys, so each parameter or metric is compared on its own."""
    if not isinstance(value, dict):
        return {prefix: value}
    out: dict[str, Any] = {}
    for k, v in value.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _key(node: Node, root: Node) -> str:
    if node is root:
        return "served"
    return " > ".join(node.link.split(" -> ")[1:])


def _named_nodes(root: Node) -> list[tuple[str, Node]]:
    """Each distinct artifact once, under its shortest input path from the served version
    (so a key names the same artifact in both versions, whichever order the walk took)."""
    best: dict[Path, tuple[str, Node]] = {}
    queue = [root]
    while queue:
        node = queue.pop(0)
        queue.extend(node.children)
        if node.record is None:
            continue
        key, path = _key(node, root), node.path.resolve()
        if path not in best or len(key) < len(best[path][0]):
            best[path] = (key, node)
    return sorted(best.values(), key=lambda item: item[0])


def summarize(audit: Audit) -> dict[str, dict[str, Any]]:
    """The four sections of one version's chain (the first audited model only)."""
    summary: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for key, node in _named_nodes(audit.roots[0]):
        record = node.record or {}
        summary["data"][f"{key}: sha256"] = record.get("sha256")
        dvc = node.dvc or next((n.dvc for n in audit.nodes() if n.path == node.path and n.dvc),
                               None)
        if dvc:
            summary["data"][f"{key}: dvc md5"] = dvc.get("md5")
            summary["data"][f"{key}: dvc rev"] = dvc.get("rev")
        git = record.get("git") or {}
        summary["code"][f"{key}: git commit"] = git.get("commit")
        summary["code"][f"{key}: git dirty"] = git.get("dirty")
        for name, version in (record.get("packages") or {}).items():
            summary["code"][f"{key}: {name}"] = version
        for section in ("params", "metrics"):
            for name, value in _flatten(record.get(section) or {}).items():
                summary[section][f"{key}: {name}"] = value
    return summary


@dataclass
class VersionDiff:
    a: str
    b: str
    changes: dict[str, list[tuple[str, Any, Any]]]  # section -> (key, value in a, value in b)

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b,
                "changes": {s: [{"key": k, "a": va, "b": vb} for k, va, vb in rows]
                            for s, rows in self.changes.items()}}


def diff_summaries(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]],
                   label_a: str, label_b: str) -> VersionDiff:
    changes = {}
    for section in SECTIONS:
        keys = sorted(a[section].keys() | b[section].keys())
        changes[section] = [(k, a[section].get(k), b[section].get(k)) for k in keys
                            if a[section].get(k) != b[section].get(k)]
    return VersionDiff(label_a, label_b, changes)


def _format(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str) and len(value) == 64:  # a sha256: its prefix is enough to read
        return value[:12]
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


def render_diff(diff: VersionDiff) -> str:
    lines = [f"changes from {diff.a} to {diff.b}"]
    for section in SECTIONS:
        rows = diff.changes[section]
        if not rows:
            lines.append(f"{section}: unchanged")
            continue
        lines.append(f"{section}:")
        lines.extend(f"  {line}" for line in _change_lines(rows))
    return "\n".join(lines)


_CI = ("_ci_low", "_ci_high")


def _change_lines(rows: list[tuple[str, Any, Any]]) -> list[str]:
    """One line per change; a metric's interval rides on its estimate's line."""
    by_key = {key: (va, vb) for key, va, vb in rows}
    lines = []
    for key, va, vb in rows:
        if key.endswith(_CI) and key.removesuffix("_ci_low").removesuffix("_ci_high") in by_key:
            continue
        ci = [by_key.get(f"{key}{suffix}") for suffix in _CI]
        text_a, text_b = _format(va), _format(vb)
        if all(ci):
            text_a += f" [{_format(ci[0][0])}, {_format(ci[1][0])}]"
            text_b += f" [{_format(ci[0][1])}, {_format(ci[1][1])}]"
        delta = ""
        if isinstance(va, int | float) and isinstance(vb, int | float) and \
                not isinstance(va, bool) and not isinstance(vb, bool):
            delta = f"  ({vb - va:+.4g})"
        lines.append(f"{key}: {text_a} -> {text_b}{delta}")
    return lines


def _version_dir(spec: str, repo: Path | None, model: str | None) -> tuple[str, Path]:
    """A version given as its number (in --model-repo, for --model) or as a folder path."""
    if spec.isdigit():
        if repo is None:
            raise UserError("--diff with version numbers needs --model-repo")
        name = model or "classifier"
        path = repo / name / spec
        if not path.is_dir():
            raise UserError(f"no version folder {path}; pass --model to pick the model")
        return f"{name}/{spec}", path
    path = Path(spec)
    if not path.is_dir():
        raise UserError(f"version folder not found: {spec}")
    return f"{path.parent.name}/{path.name}", path


def diff_versions(a: str, b: str, repo: str | Path | None, model: str | None,
                  search_roots: list[str | Path] | None = None) -> tuple[VersionDiff, list[str]]:
    """The diff of two versions, and the broken links of either chain (a diff of a broken chain
    is still shown, since it is often what explains the break)."""
    repo_path = Path(repo) if repo else None
    summaries, broken = [], []
    for spec in (a, b):
        label, path = _version_dir(spec, repo_path, model)
        audit = trace_version(path, search_roots)
        summaries.append((label, summarize(audit)))
        broken.extend(f"{label}: {p}" for p in audit.problems)
    (label_a, sa), (label_b, sb) = summaries
    return diff_summaries(sa, sb, label_a, label_b), broken
