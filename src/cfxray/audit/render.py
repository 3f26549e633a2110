"""The audit as a tree a person reads top-down: served version first, raw data last."""

from __future__ import annotations

from pathlib import Path

from cfxray.audit.findings import Audit, Node


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


def _inputs_of(node: Node) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((child.name, str(child.path.resolve())) for child in node.children))


def _subtree_ok(node: Node) -> bool:
    return node.ok and all(_subtree_ok(child) for child in node.children)


def render_tree(audit: Audit) -> str:
    lines = []
    if audit.served:
        lines.append(f"Triton server {audit.served['url']} serves: "
                     f"{', '.join(audit.served['ready']) or 'nothing'}")
    shown: dict[tuple[tuple[str, str], ...], str] = {}
    for root in audit.roots:
        same_as = shown.get(_inputs_of(root))
        if same_as and all(_subtree_ok(child) for child in root.children):
            # Every model of a version usually has the same inputs: show that chain once.
            lines.append(_headline(root))
            lines.extend(f"    {status}" for status in root.status)
            lines.append(f"    inputs: the same artifacts as {same_as} (every input check passed there)")
        else:
            lines.extend(_lines(root, "", True, top=True))
            shown.setdefault(_inputs_of(root), root.name)
        lines.append("")
    for warning in audit.warnings:
        lines.append(f"warning: {warning}")
    if audit.ok:
        distinct = len({node.path.resolve() for node in audit.nodes()})
        lines.append(f"audit passed: {distinct} artifacts, every hash recomputed "
                     "and matching its record")
    else:
        lines.append(f"audit FAILED: {len(audit.problems)} broken link(s)")
        lines.extend(f"  broken: {problem}" for problem in audit.problems)
    return "\n".join(lines)
