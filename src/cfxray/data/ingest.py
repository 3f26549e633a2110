"""Normalise a real chest X-ray folder into the layout and manifest the phantom uses.

Accepted sources: Kermany (`train|val|test/NORMAL|PNEUMONIA`), flat (`NORMAL/ PNEUMONIA/`)
and RSNA-style (`0/ 1/`). Every file is decoded once in a worker and staged under its content
hash; bad files go to `quarantine.csv` with a reason, byte-identical copies are kept once
(`duplicates.csv`), and splits are kept from the source or made over patients.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from cfxray.conventions import SPLITS
from cfxray.data import manifest
from cfxray.data.images import ImageRejected, decode_gray
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


@dataclass(frozen=True)
class SourceFile:
    path: Path
    rel: str  # relative to the source root, for reports
    label: str
    split: str | None  # the source's own split, if it has one


@dataclass(frozen=True)
class Decoded:
    source: SourceFile
    sha256: str = ""  # of the source file's bytes
    width: int = 0
    height: int = 0
    mode: str = ""
    reason: str = ""  # non-empty: quarantined


def _subdirs(path: Path) -> dict[str, Path]:
    return {p.name.lower(): p for p in sorted(path.iterdir()) if p.is_dir()}


def _class_dirs(path: Path, layout: str) -> dict[str, Path]:
    subdirs = _subdirs(path)
    return {label: subdirs[name] for name, label in _CLASS_DIRS[layout].items() if name in subdirs}


def detect_layout(src: Path) -> tuple[str, list[SourceFile]]:
    """Which of the three layouts `src` follows, and its files with their labels and splits."""
    if not src.is_dir():
        raise UserError(f"source {src} is not a directory")
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
            f"(Kermany), NORMAL/ and PNEUMONIA/ (flat) or 0/ and 1/ (RSNA-style); "
            f"found folders {sorted(subdirs) or 'none'}")
    files = []
    for split, root in roots:
        for label, class_dir in _class_dirs(root, layout).items():
            for path in sorted(p for p in class_dir.rglob("*") if p.is_file()):
                files.append(SourceFile(path, path.relative_to(src).as_posix(), label, split))
    if not files:
        raise UserError(f"{src} looks like the {layout} layout but holds no files")
    return layout, files


def _stage(job: tuple[SourceFile, Path]) -> Decoded:
    """Hash, decode and write one file as `staging/<sha256>.png`, or say why it is rejected."""
    source, staging = job
    try:
        data = source.path.read_bytes()
    except OSError as exc:
        return Decoded(source, reason=f"unreadable: {exc.strerror or exc}")
    sha = hashlib.sha256(data).hexdigest()
    try:
        gray, info = decode_gray(source.path)
    except ImageRejected as exc:
        return Decoded(source, sha, reason=str(exc))
    target = staging / f"{sha}.png"
    if not target.exists():
        partial = staging / f"{sha}.{os.getpid()}.tmp"
        partial.write_bytes(png_bytes(gray))
        os.replace(partial, target)
    height, width = gray.shape  # as displayed, after EXIF orientation
    return Decoded(source, sha, width, height, str(info["mode"]))


def _decode_all(files: Sequence[SourceFile], staging: Path, workers: int) -> list[Decoded]:
    jobs = [(f, staging) for f in files]
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
            others = ", ".join(d.source.rel for d in group)
            conflicts += [{"source": d.source.rel, "reason": "identical content labelled both "
                           f"NORMAL and PNEUMONIA ({others})"} for d in group]
            continue
        kept.append(group[0])
        duplicates += [{"sha256": sha, "kept": group[0].source.rel, "dropped": d.source.rel}
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
        stem = Path(d.source.rel).stem
        rel = manifest.image_path(split, label, stem)
        if rel in taken:
            rel = manifest.image_path(split, label, f"{stem}-{d.sha256[:8]}")
        taken.add(rel)
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / f"{d.sha256}.png", out / rel)
        rows.append({"file": rel, "label": label, "split": split,
                     "patient_id": patients[d.source.rel],
                     "sha256": hashlib.sha256((out / rel).read_bytes()).hexdigest(),
                     "lesion_mask": "", "lung_mask": "", "twin": ""})
        provenance.append({"file": rel, "source": d.source.rel, "source_sha256": d.sha256})
    return rows, provenance


def ingest(src: Path, out: Path, resplit: bool, seed: int, split_fractions: Sequence[float],
           workers: int = 1) -> dict[str, Any]:
    """Run the whole ingest; returns the summary it also prints and saves."""
    layout, files = detect_layout(src)
    out = manifest.prepare_output_dir(out)
    staging = out / _STAGING
    staging.mkdir()
    decoded = _decode_all(files, staging, workers)
    quarantine = [{"source": d.source.rel, "reason": d.reason} for d in decoded if d.reason]
    kept, duplicates, conflicts = _deduplicate([d for d in decoded if not d.reason])
    quarantine += conflicts
    if not kept:
        _write_quarantine(out, quarantine)
        raise UserError(f"no usable images in {src}: all {len(files)} file(s) were quarantined; "
                        f"reasons in {out / QUARANTINE_NAME}")
    patients = {d.source.rel: patient_id_from_name(Path(d.source.rel).stem) for d in kept}
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

    manifest.write_manifest(out, rows)
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
        "modes": dict(Counter(d.mode for d in kept)),
        "patients_in_several_splits": len(leaks),
        "patients_in_several_splits_examples": dict(list(leaks.items())[:20]),
    })
    manifest.write_summary(out, summary)
    for patient, in_splits in list(leaks.items())[:5]:
        print(f"warning: patient {patient} appears in splits {', '.join(in_splits)}")
    if leaks:
        print(f"warning: {len(leaks)} patient(s) appear in several source splits; "
              "use --resplit for patient-aware splits")
    return summary


def _write_quarantine(out: Path, quarantine: Sequence[dict[str, str]]) -> None:
    _write_csv(out / QUARANTINE_NAME, ("source", "reason"), quarantine)


def _reason_kind(reason: str) -> str:
    return reason.split(":")[0].split(" (")[0]

