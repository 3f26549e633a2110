"""Reader studies recorded against a published model version.

A reader study (`cfxray study`) is made from a published version, so its own lineage names
the version below it; for the version to show its studies, `cfxray study report` leaves a
document, `reader_studies.json`, in each version folder: one entry per study report, with
the report's content hash and its headline numbers. Like a model card it describes the
version rather than being part of it: it is left out of the version's content hash and its
own hash is sealed into the version's record, so an edited document is caught. Auditing a
model repository (`cfxray.audit.repository`) checks every entry against the report it names;
model cards list them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cfxray.audit.chain import Walker
from cfxray.audit.findings import Node
from cfxray.conventions import LINEAGE_FILE
from cfxray.errors import UserError
from cfxray.lineage import read_lineage, sha256_tree

STUDIES_FILE = "reader_studies.json"


def read_studies(version_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(version_dir) / STUDIES_FILE
    if not path.is_file():
        return []
    try:
        studies = json.loads(path.read_text()).get("studies")
    except (ValueError, AttributeError):
        studies = None
    if not isinstance(studies, list) or not all(isinstance(s, dict) for s in studies):
        raise UserError(f"{path} is not a reader-studies document; `cfxray study report` "
                        "writes it again")
    return studies


def record_study(version_dir: str | Path, entry: dict[str, Any]) -> None:
    """Add a study report's entry; a report written again into the same folder replaces its
    earlier entry (more answers, same study)."""
    studies = [s for s in read_studies(version_dir) if s.get("report") != entry["report"]]
    studies.append(entry)
    (Path(version_dir) / STUDIES_FILE).write_text(
        json.dumps({"studies": studies}, indent=2, sort_keys=True))


def check_studies(walker: Walker, node: Node) -> None:
    """Each study recorded in a version folder: its report is where the entry says, unchanged,
    and made from the study the entry names; a mismatch is a broken link of the version."""
    try:
        studies = read_studies(node.path)
    except UserError as exc:
        walker.fail(node, node.link, str(exc))
        return
    for entry in studies:
        what = f"reader study {entry.get('name')!r}"
        report = walker.locate(str(entry.get("report") or ""))
        if report is None or not (report / LINEAGE_FILE).is_file():
            walker.fail(node, node.link, f"{what}: report {entry.get('report')} or its "
                                         f"{LINEAGE_FILE} not found")
            continue
        now = sha256_tree(report)
        if now != entry.get("report_sha256"):
            walker.fail(node, node.link, f"{what}: report {report} changed since it was "
                                         f"recorded (sha256 "
                                         f"{str(entry.get('report_sha256'))[:12]} recorded, "
                                         f"{now[:12]} now)")
            continue
        study_input = (read_lineage(report).get("inputs") or {}).get("study") or {}
        if study_input.get("sha256") != entry.get("study_sha256"):
            walker.fail(node, node.link, f"{what}: report {report} was made from another "
                                         "study than the one recorded here")
            continue
        node.status.append(f"ok {what}: report sha256 {now[:12]}, {_count(entry)}")


def card_lines(studies: list[dict[str, Any]]) -> list[str]:
    """One line per study and headline number, for model cards."""
    lines = []
    for s in studies:
        lines.append(f"{s.get('name')}: {_count(s)}, study sha256 "
                     f"{str(s.get('study_sha256'))[:12]}, report {s.get('report')}/report.html "
                     f"({s.get('reported_utc')})")
        for row in s.get("summary") or []:
            ci = "" if row.get("low") is None else \
                f" ({s.get('confidence', 0.95):.0%} CI {row['low']:.3f}-{row['high']:.3f})"
            lines.append(f"{s.get('name')}: {row['measure']} {row['value']:.3f}{ci}"
                         + (f", {row['note']}" if row.get("note") else ""))
    return lines


def _count(entry: dict[str, Any]) -> str:
    readers = entry.get("readers")
    return f"{readers} reader{'' if readers == 1 else 's'}, {entry.get('answers')} answers"
