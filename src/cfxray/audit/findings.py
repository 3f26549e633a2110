"""What an audit found: the artifacts of a chain, the role each plays, and the broken links.

An artifact's role comes from the exact `kind` its step writes into `lineage.json`
(`cfxray.lineage.write_lineage`); a kind no step writes has no role, so the audit reports it
instead of guessing from words in it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cfxray.contract import MODEL_NAMES

# Roles along the chain, in the order a served model depends on them.
ROLES = ("export", "evaluation", "cyclegan", "classifier", "prepared", "raw")
# The `kind` each step records -> its role (the oracle is a classifier training run).
KIND_ROLES: dict[str, str] = {
    **{f"serving/{model}": "export" for model in MODEL_NAMES},  # cfxray export
    "evaluation": "evaluation",  # cfxray evaluate
    "cyclegan": "cyclegan",  # cfxray train-cyclegan
    "classifier": "classifier",  # cfxray train-classifier
    "prepared": "prepared",  # cfxray data preprocess
    "dataset": "raw",  # cfxray data phantom / ingest, and the pipeline's DVC fetch
    # Above the chain, not on it: a reader study made from a served version.
    "reader_study_definition": "study",  # cfxray study create
    "reader_study_report": "study",  # cfxray study report
}


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
    status: list[str] = field(default_factory=list)  # "ok ..." or "FAIL ..." lines
    children: list[Node] = field(default_factory=list)
    seen_above: bool = False  # reached again through another input; shown once
    dvc: dict[str, Any] | None = None

    @property
    def kind(self) -> str | None:
        return (self.record or {}).get("kind")

    @property
    def role(self) -> str | None:
        return KIND_ROLES.get(self.kind or "")

    @property
    def ok(self) -> bool:
        return not any(s.startswith("FAIL") for s in self.status)

    def first(self, role: str) -> Node | None:
        """The first artifact of a role below this one, breadth first (so the classifier is
        found before the oracle, and an artifact by its shortest link)."""
        queue = [self]
        while queue:
            node = queue.pop(0)
            if node.role == role and node.record is not None and not node.seen_above:
                return node
            queue.extend(node.children)
        return None

    def to_dict(self) -> dict[str, Any]:
        record = self.record or {}
        return {
            "name": self.name,
            "link": self.link,
            "path": str(self.path),
            "kind": self.kind,
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
