"""The audited chain as a picture: one box per artifact, served versions on top, raw data at
the bottom, broken artifacts in red, so a reviewer sees at a glance where the chain breaks."""

from __future__ import annotations

from pathlib import Path

from cfxray.audit.findings import ROLES, Audit, Node

_LAYER = {role: i for i, role in enumerate(ROLES)}
OK_COLOUR, BROKEN_COLOUR = "#d8f0d8", "#f7c6c6"


def _collect(audit: Audit) -> tuple[dict[Path, Node], set[tuple[Path, Path]], set[Path]]:
    """Distinct artifacts, the edges between them, and the artifacts with a failed check."""
    nodes: dict[Path, Node] = {}
    edges: set[tuple[Path, Path]] = set()
    broken: set[Path] = set()
    queue = list(audit.roots)
    while queue:
        node = queue.pop(0)
        key = node.path.resolve()
        if not node.seen_above or key not in nodes:
            nodes.setdefault(key, node)
        if not node.ok:
            broken.add(key)
        for child in node.children:
            edges.add((key, child.path.resolve()))
            queue.append(child)
    return nodes, edges, broken


def _label(node: Node) -> str:
    """Input name (classifier, oracle), short path, kind and hash prefix."""
    record = node.record or {}
    sha = str(record.get("sha256") or "no record")[:10]
    where = f"{node.path.parent.name}/{node.path.name}"
    lines = [node.name] if where == node.name else [node.name, where]
    return "\n".join([*lines, f"[{record.get('kind') or '?'}] {sha}"])


def draw_chain(audit: Audit, out: str | Path) -> Path:
    """Write the chain as a PNG (layers follow the chain's roles)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nodes, edges, broken = _collect(audit)
    layers: dict[int, list[Path]] = {}
    for key, node in nodes.items():
        layers.setdefault(_LAYER.get(node.role or "", len(ROLES)), []).append(key)
    depth = max(layers) + 1 if layers else 1
    width = max((len(keys) for keys in layers.values()), default=1)
    position: dict[Path, tuple[float, float]] = {}
    for layer, keys in layers.items():
        for i, key in enumerate(sorted(keys, key=lambda k: nodes[k].name)):
            position[key] = ((i + 0.5) * width / len(keys), float(depth - 1 - layer))

    fig, ax = plt.subplots(figsize=(max(6.0, 3.2 * width), 1.6 * depth + 1))
    for parent, child in edges:
        if parent in position and child in position:
            ax.annotate("", xy=position[child], xytext=position[parent],
                        arrowprops={"arrowstyle": "->", "color": "#555555", "lw": 1.0,
                                    "shrinkA": 18, "shrinkB": 18})
    for key, (x, y) in position.items():
        ax.text(x, y, _label(nodes[key]), ha="center", va="center", fontsize=8,
                bbox={"boxstyle": "round,pad=0.4", "edgecolor": "#333333",
                      "facecolor": BROKEN_COLOUR if key in broken else OK_COLOUR})
    ax.set_xlim(0, width)
    ax.set_ylim(-0.7, depth - 0.3)
    ax.axis("off")
    verdict = "audit passed" if audit.ok else f"audit FAILED: {len(audit.problems)} broken link(s)"
    ax.set_title(f"lineage of {', '.join(r.name for r in audit.roots)}: {verdict}", fontsize=10)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out
