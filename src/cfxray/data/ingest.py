"""Normalise a real chest X-ray folder into the layout and manifest the phantom uses.

Accepted sources: Kermany (`train|val|test/NORMAL|PNEUMONIA`), flat (`NORMAL/ PNEUMONIA/`),
RSNA-style (`0/ 1/`) and the RSNA challenge (DICOMs plus a CSV with `patientId` and `Target`);
any of them may mix DICOM, PNG and JPEG. Every file is decoded once in a worker and staged
under its content hash; bad files, and DICOMs that are not frontal chest radiographs, go to
`quarantine.csv` with a reason, byte-identical copies are kept once (`duplicates.csv`), and
splits are kept from the source or made over patients.

DICOM identifiers never reach an output: patient and study IDs become keyed pseudonyms
(`cfxray.data.deid`), DICOM images are named after the patient's pseudonym and their content
hash, and reports name a DICOM source by its content hash, not its path (hospital exports name
files and folders after patients and UIDs). In the RSNA challenge layout every file name is a
patientId and is treated the same way.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from cfxray.conventions import SPLITS
from cfxray.data import manifest
from cfxray.data.deid import Pseudonymizer, load_pseudonymizer
from cfxray.data.images import ImageRejected, decode_gray, is_dicom, path_is_dicom
from cfxray.data.phantom_dataset import png_bytes
from cfxray.data.splits import (
    patient_id_from_name,
    patients_in_several_splits,
    stratified_patient_splits,
)
from cfxray.errors import UserError

QUARANTINE_NAME = "quarantine.csv"
DUPLICATES_NAME = "duplicates.csv"
PROVENANCE_NAME = "provenance.csv"
_STAGING = ".staging"
_CLASS_DIRS = {"kermany": {"normal": "NORMAL", "pneumonia": "PNEUMONIA"},
               "flat": {"normal": "NORMAL", "pneumonia": "PNEUMONIA"},
               "rsna": {"0": "NORMAL", "1": "PNEUMONIA"}}
_SPLIT_DIRS = {"train": "train", "val": "val", "validation": "val", "test": "test"}
_RSNA_COLUMNS = ("patientId", "Target")
_LATERAL_VIEWS = {"LL", "RL", "LAT", "LATERAL"}
# Columns an ingested manifest carries beyond `MANIFEST_FIELDS`: what the source was and what
# was done to it, and, for DICOM, the view, the study pseudonym and the burned-in flag.
SOURCE_FIELDS = ("source_format", "source_mode", "bits_stored", "transforms", "view",
                 "study_id", "burned_in_annotation")


@dataclass(frozen=True)
class SourceFile:
    path: Path
    rel: str  # relative to the source root; shown in reports unless the file is DICOM
    label: str  # empty: the source gives this file no label (quarantined)
    split: str | None  # the source's own split, if it has one
    folders: str = ""  # the layout's own folders above it ("train/NORMAL/"), safe to show
    patient_key: str = ""  # RSNA challenge: its patientId, an identifier never written


@dataclass(frozen=True)
class Selection:
    """Which DICOMs enter the dataset, and the key for their pseudonyms."""

    views: tuple[str, ...]  # ViewPosition values kept; UNKNOWN keeps DICOMs without one
    body_parts: tuple[str, ...]  # BodyPartExamined values kept when the header has one
    keep_burned_in: bool
    pseudonyms: Pseudonymizer | None  # None: no DICOM in the source

    def reason(self, info: dict[str, str | int]) -> str:
        """Why a decoded DICOM is quarantined, or '' when it is kept."""
        view = str(info["view_position"]) or "UNKNOWN"
        if view not in self.views:
            if view in _LATERAL_VIEWS:
                return f"lateral view (ViewPosition {view})"
            if view == "UNKNOWN":
                return "unknown view (no ViewPosition)"
            return f"view not selected (ViewPosition {view}; kept: {', '.join(self.views)})"
        body = str(info["body_part"])
        if body and self.body_parts and body not in self.body_parts:
            return f"not a chest image (BodyPartExamined {body})"
        if info["burned_in_annotation"] == "YES" and not self.keep_burned_in:
            return "burned-in annotation (BurnedInAnnotation YES)"
        return ""


@dataclass(frozen=True)
class Decoded:
    source: SourceFile
    shown: str  # the source's name in reports
    sha256: str = ""  # of the source file's bytes
    width: int = 0
    height: int = 0
    mode: str = ""
    reason: str = ""  # non-empty: quarantined
    patient: str = ""  # pseudonym; empty: taken from the file name
    stem: str = ""  # output file stem; empty: the source's own
    facts: dict[str, str] = field(default_factory=dict)  # SOURCE_FIELDS


def _subdirs(path: Path) -> dict[str, Path]:
    return {p.name.lower(): p for p in sorted(path.iterdir()) if p.is_dir()}


def _class_dirs(path: Path, layout: str) -> dict[str, Path]:
    subdirs = _subdirs(path)
    return {label: subdirs[name] for name, label in _CLASS_DIRS[layout].items() if name in subdirs}


def detect_layout(src: Path) -> tuple[str, list[SourceFile]]:
    """Which of the four layouts `src` follows, and its files with their labels and splits."""
    if not src.is_dir():
        raise UserError(f"source {src} is not a directory")
    labels_csv = _rsna_labels_csv(src)
    if labels_csv is not None:
        return "rsna-challenge", _rsna_challenge_files(src, labels_csv)
    subdirs = _subdirs(src)
    split_dirs = {_SPLIT_DIRS[n]: p for n, p in subdirs.items() if n in _SPLIT_DIRS}
    if split_dirs:
        layout, roots = "kermany", [(split, p) for split, p in split_dirs.items()]
    elif {"normal", "pneumonia"} & subdirs.keys():
        layout, roots = "flat", [(None, src)]
    elif {"0", "1"} & subdirs.keys():
        layout, roots = "rsna", [(None, src)]
    else:
        raise UserError(
            f"{src} follows no known layout; expected train|val|test/NORMAL|PNEUMONIA "
            f"(Kermany), NORMAL/ and PNEUMONIA/ (flat), 0/ and 1/ (RSNA-style) or a CSV with "
            f"columns {' and '.join(_RSNA_COLUMNS)} (RSNA challenge); "
            f"found folders {sorted(subdirs) or 'none'}")
    files = []
    for split, root in roots:
        for label, class_dir in _class_dirs(root, layout).items():
            folders = class_dir.relative_to(src).as_posix() + "/"
            for path in sorted(p for p in class_dir.rglob("*") if p.is_file()):
                files.append(SourceFile(path, path.relative_to(src).as_posix(), label, split,
                                        folders))
    if not files:
        raise UserError(f"{src} looks like the {layout} layout but holds no files")
    return layout, files


def _rsna_labels_csv(src: Path) -> Path | None:
    """The one CSV at the top of `src` with `patientId` and `Target` columns, if any."""
    found = []
    for path in sorted(src.glob("*.csv")):
        with path.open(newline="") as f:
            header = next(csv.reader(f), [])
        if all(column in header for column in _RSNA_COLUMNS):
            found.append(path)
    if len(found) > 1:
        raise UserError(f"{src} has several label CSVs with columns {list(_RSNA_COLUMNS)}: "
                        f"{', '.join(p.name for p in found)}; keep one")
    return found[0] if found else None


def _rsna_challenge_files(src: Path, labels_csv: Path) -> list[SourceFile]:
    """One label per image: PNEUMONIA when any of its patientId's rows has Target 1."""
    targets: dict[str, set[str]] = defaultdict(set)
    with labels_csv.open(newline="") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            if row["Target"] not in ("0", "1"):
                raise UserError(f"{labels_csv.name} line {line}: Target must be 0 or 1")
            targets[row["patientId"]].add(row["Target"])
    files = []
    for path in sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() != ".csv"):
        target = targets.get(path.stem)
        label = "" if target is None else ("PNEUMONIA" if "1" in target else "NORMAL")
        files.append(SourceFile(path, path.relative_to(src).as_posix(), label, None,
                                patient_key=path.stem))
    if not files:
        raise UserError(f"{src} has the label file {labels_csv.name} but no images")
    return files


def _needs_pseudonyms(layout: str, files: Sequence[SourceFile]) -> bool:
    """A cheap first look (file names and 132 bytes each) for DICOM before anything is written."""
    if layout == "rsna-challenge":
        return True
    for f in files:
        try:
            if path_is_dicom(f.path):
                return True
        except OSError:
            if is_dicom(b"", f.path.name):
                return True
    return False


def _stage(job: tuple[SourceFile, Path, Selection]) -> Decoded:
    """Hash, decode, select and write one file as `staging/<sha256>.png`, or say why not."""
    source, staging, selection = job
    hidden = bool(source.patient_key) or is_dicom(b"", source.path.name)
    suffix = source.path.suffix.lower()
    try:
        data = source.path.read_bytes()
    except OSError as exc:
        shown = source.rel
        if hidden and selection.pseudonyms is not None:
            shown = f"{source.folders}{selection.pseudonyms('file', source.rel)}{suffix}"
        return Decoded(source, shown, reason=f"unreadable: {exc.strerror or type(exc).__name__}")
    sha = hashlib.sha256(data).hexdigest()
    dicom = is_dicom(data, source.path.name)
    shown = f"{source.folders}sha256-{sha[:16]}{suffix}" if hidden or dicom else source.rel
    if not source.label:
        return Decoded(source, shown, sha, reason="no label (patientId not in the label CSV)")
    try:
        gray, staged = (_dicom if dicom else _other)(source, data, sha, shown, selection)
    except ImageRejected as exc:
        return Decoded(source, shown, sha, reason=str(exc))
    if gray is None:
        return staged
    target = staging / f"{sha}.png"
    if not target.exists():
        partial = staging / f"{sha}.{os.getpid()}.tmp"
        partial.write_bytes(png_bytes(gray))
        os.replace(partial, target)
    height, width = gray.shape  # as displayed, after EXIF orientation
    return replace(staged, width=width, height=height)


def _dicom(source: SourceFile, data: bytes, sha: str, shown: str,
           selection: Selection) -> tuple[np.ndarray | None, Decoded]:
    """A DICOM's pixels, pseudonyms and facts, or (None, its quarantine reason)."""
    from cfxray.data.dicom import read_dicom  # pydicom only when the source has DICOM

    image = read_dicom(data)
    reason = selection.reason(image.info)
    if reason:
        return None, Decoded(source, shown, sha, reason=reason)
    pseudonyms = selection.pseudonyms
    assert pseudonyms is not None  # ingest loads the salt whenever a source has DICOM
    ids = image.identifiers
    # Without a PatientID, a study still belongs to one patient; failing that, the file does.
    study = f"study:{ids['StudyInstanceUID']}" if ids["StudyInstanceUID"] else ""
    patient = pseudonyms("patient", ids["PatientID"] or source.patient_key or study
                         or f"file:{source.rel}")
    info = image.info
    facts = {"source_format": "DICOM", "source_mode": str(info["mode"]),
             "bits_stored": str(info["bits_stored"]), "transforms": str(info["transforms"]),
             "view": str(info["view_position"]),
             "study_id": pseudonyms("study", ids["StudyInstanceUID"])
             if ids["StudyInstanceUID"] else "",
             "burned_in_annotation": str(info["burned_in_annotation"])}
    return image.gray, Decoded(source, shown, sha, mode=str(info["mode"]), patient=patient,
                               stem=f"{patient}-{sha[:8]}", facts=facts)


def _other(source: SourceFile, data: bytes, sha: str, shown: str,
           selection: Selection) -> tuple[np.ndarray, Decoded]:
    """A PNG/JPEG's pixels and facts; in the RSNA challenge layout its name is a patientId."""
    gray, info = decode_gray(data)
    patient = stem = ""
    if source.patient_key:
        assert selection.pseudonyms is not None
        patient = selection.pseudonyms("patient", source.patient_key)
        stem = f"{patient}-{sha[:8]}"
    facts = {"source_format": str(info["format"]), "source_mode": str(info["mode"]),
             "transforms": str(info.get("transforms", ""))}
    return gray, Decoded(source, shown, sha, mode=str(info["mode"]), patient=patient, stem=stem,
                         facts=facts)


def _decode_all(files: Sequence[SourceFile], staging: Path, selection: Selection,
                workers: int) -> list[Decoded]:
    jobs = [(f, staging, selection) for f in files]
    progress = dict(total=len(jobs), desc="ingest", unit="file", mininterval=1.0)
    if workers <= 1:
        return [_stage(job) for job in tqdm(jobs, **progress)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(tqdm(pool.map(_stage, jobs, chunksize=8), **progress))


def _deduplicate(decoded: Sequence[Decoded]) -> tuple[list[Decoded], list[dict[str, str]],
                                                      list[dict[str, str]]]:
    """Keep one file per content hash; identical content under both labels is quarantined."""
    by_hash: dict[str, list[Decoded]] = defaultdict(list)
    for d in decoded:
        by_hash[d.sha256].append(d)
    kept, duplicates, conflicts = [], [], []
    split_rank = {s: i for i, s in enumerate(SPLITS)}
    for sha, group in by_hash.items():
        group.sort(key=lambda d: (split_rank.get(d.source.split or "", -1), d.source.rel))
        labels = sorted({d.source.label for d in group})
        if len(labels) > 1:
            others = ", ".join(d.shown for d in group)
            conflicts += [{"source": d.shown, "reason": "identical content labelled both "
                           f"NORMAL and PNEUMONIA ({others})"} for d in group]
            continue
        kept.append(group[0])
        duplicates += [{"sha256": sha, "kept": group[0].shown, "dropped": d.shown}
                       for d in group[1:]]
    kept.sort(key=lambda d: d.source.rel)
    return kept, duplicates, conflicts


def _write_csv(path: Path, fields: Sequence[str], rows: Sequence[dict[str, str]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _place(kept: Sequence[Decoded], splits: dict[str, str], patients: dict[str, str],
           out: Path, staging: Path) -> tuple[list[manifest.Row], list[dict[str, str]]]:
    """Move staged PNGs to `split/CLASS/stem.png`; a clashing stem gets its hash appended."""
    rows, provenance, taken = [], [], set()
    for d in kept:
        split, label = splits[d.source.rel], d.source.label
        stem = d.stem or Path(d.source.rel).stem
        rel = manifest.image_path(split, label, stem)
        if rel in taken:
            rel = manifest.image_path(split, label, f"{stem}-{d.sha256[:8]}")
        taken.add(rel)
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / f"{d.sha256}.png", out / rel)
        rows.append({"file": rel, "label": label, "split": split,
                     "patient_id": patients[d.source.rel],
                     "sha256": hashlib.sha256((out / rel).read_bytes()).hexdigest(),
                     "lesion_mask": "", "lung_mask": "", "twin": "", **d.facts})
        provenance.append({"file": rel, "source": d.shown, "source_sha256": d.sha256})
    return rows, provenance


def ingest(src: Path, out: Path, *, resplit: bool, seed: int, split_fractions: Sequence[float],
           views: Sequence[str], body_parts: Sequence[str], keep_burned_in: bool,
           deid_salt_file: str | Path | None, workers: int = 1) -> dict[str, Any]:
    """Run the whole ingest; returns the summary it also prints and saves."""
    layout, files = detect_layout(src)
    pseudonyms = load_pseudonymizer(deid_salt_file) if _needs_pseudonyms(layout, files) else None
    selection = Selection(tuple(v.strip().upper() for v in views),
                          tuple(b.strip().upper() for b in body_parts), keep_burned_in,
                          pseudonyms)
    out = manifest.prepare_output_dir(out)
    staging = out / _STAGING
    staging.mkdir()
    decoded = _decode_all(files, staging, selection, workers)
    quarantine = [{"source": d.shown, "reason": d.reason} for d in decoded if d.reason]
    kept, duplicates, conflicts = _deduplicate([d for d in decoded if not d.reason])
    quarantine += conflicts
    if not kept:
        _write_quarantine(out, quarantine)
        raise UserError(f"no usable images in {src}: all {len(files)} file(s) were quarantined; "
                        f"reasons in {out / QUARANTINE_NAME}")
    patients = {d.source.rel: d.patient or patient_id_from_name(Path(d.source.rel).stem)
                for d in kept}
    keep_splits = layout == "kermany" and not resplit
    if keep_splits:
        splits = {d.source.rel: d.source.split or "train" for d in kept}
    else:
        labels_by_patient: dict[str, list[str]] = defaultdict(list)
        for d in kept:
            labels_by_patient[patients[d.source.rel]].append(d.source.label)
        by_patient = stratified_patient_splits(labels_by_patient, split_fractions, seed)
        splits = {rel: by_patient[p] for rel, p in patients.items()}
    rows, provenance = _place(kept, splits, patients, out, staging)
    for leftover in staging.iterdir():
        leftover.unlink()
    staging.rmdir()

    manifest.write_manifest(out, rows, extra_fields=SOURCE_FIELDS)
    _write_quarantine(out, quarantine)
    _write_csv(out / DUPLICATES_NAME, ("sha256", "kept", "dropped"), duplicates)
    _write_csv(out / PROVENANCE_NAME, ("file", "source", "source_sha256"), provenance)
    leaks = patients_in_several_splits([(r["patient_id"], r["split"]) for r in rows])
    summary = manifest.summarize(rows, sizes=[(d.width, d.height) for d in kept], extra={
        "source": str(src), "layout": layout,
        "splits": "source" if keep_splits else f"patient-aware (seed {seed})",
        "files_seen": len(files), "quarantined": len(quarantine),
        "quarantine_reasons": dict(Counter(_reason_kind(q["reason"]) for q in quarantine)),
        "duplicates": len(duplicates),
        "formats": dict(Counter(r["source_format"] for r in rows)),
        "modes": dict(Counter(d.mode for d in kept)),
        "patients_in_several_splits": len(leaks),
        "patients_in_several_splits_examples": dict(list(leaks.items())[:20]),
    })
    if pseudonyms is not None:
        summary["dicom"] = _dicom_summary(rows, selection)
        summary["deidentification"] = pseudonyms.record()
    manifest.write_summary(out, summary)
    for patient, in_splits in list(leaks.items())[:5]:
        print(f"warning: patient {patient} appears in splits {', '.join(in_splits)}")
    if leaks:
        print(f"warning: {len(leaks)} patient(s) appear in several source splits; "
              "use --resplit for patient-aware splits")
    return summary


def _dicom_summary(rows: Sequence[manifest.Row], selection: Selection) -> dict[str, Any]:
    """What was done to the DICOMs kept, and the selection rules they passed."""
    dicom = [r for r in rows if r["source_format"] == "DICOM"]
    steps = Counter(_reason_kind(step) for r in dicom for step in r["transforms"].split("; ")
                    if step)
    return {
        "images": len(dicom),
        "photometric": dict(Counter(r["source_mode"] for r in dicom)),
        "bits_stored": dict(Counter(r["bits_stored"] for r in dicom)),
        "views": dict(Counter(r["view"] or "UNKNOWN" for r in dicom)),
        "transforms": dict(steps),
        "burned_in_annotation_flagged": sum(r["burned_in_annotation"] == "YES" for r in dicom),
        "selection": {"views": list(selection.views), "body_parts": list(selection.body_parts),
                      "keep_burned_in": selection.keep_burned_in},
    }


def _write_quarantine(out: Path, quarantine: Sequence[dict[str, str]]) -> None:
    _write_csv(out / QUARANTINE_NAME, ("source", "reason"), quarantine)


def _reason_kind(reason: str) -> str:
    return reason.split(":")[0].split(" (")[0]

