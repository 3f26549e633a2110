"""The audit as a tree a person reads top-down: served version first, raw data last."""

from __future__ import annotations

from pathlib import Path

from cfxray.audit.chain import Audit, Node


def _short(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _headline(node: Node) -> str:
    record = node.record or {}
    mark = "✓" if node.ok else "✗"
    parts = [f"{mark} {node.name}: {_short(node.path)}"]
    if record.get("kind"):
        parts.append(f"[{record['kind']}]")
    git = record.get("git") or {}
    if git.get("commit"):
        parts.append(f"git {str(git['commit'])[:10]}{' (dirty)' if git.get('dirty') else ''}")
    created = (record.get("context") or {}).get("created_utc")
    if created:
        parts.append(created)
    return "  ".join(parts)


def _lines(node: Node, prefix: str, last: bool, top: bool) -> list[str]:
    branch = "" if top else ("└── " if last else "├── ")
    lines = [f"{prefix}{branch}{_headline(node)}"]
    inner = prefix + ("" if top else ("    " if last else "│   "))
    if node.seen_above:
        lines.append(f"{inner}    (same artifact as above; its inputs are listed there)")
        return lines
    for status in node.status:
        lines.append(f"{inner}    {status}")
    for i, child in enumerate(node.children):
        lines.extend(_lines(child, inner, i == len(node.children) - 1, top=False))
    return lines


def render_tree(audit: Audit) -> str:
    lines = []
    if audit.served:
        lines.append(f"Triton server {audit.served['url']} serves: "
                     f"{', '.join(audit.served['ready']) or 'nothing'}")
    for root in audit.roots:
        lines.extend(_lines(root, "", True, top=True))
        lines.append("")
    for warning in audit.warnings:
        lines.append(f"warning: {warning}")
    if audit.ok:
        lines.append(f"audit passed: {len(audit.nodes())} artifacts, every hash recomputed "
                     "and matching its record")
    else:
        lines.append(f"audit FAILED: {len(audit.problems)} broken link(s)")
        lines.extend(f"  broken: {problem}" for problem in audit.problems)
    return "\n".join(lines)
