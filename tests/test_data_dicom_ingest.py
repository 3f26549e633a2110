"""Hospital data through `cfxray data ingest`: mixed DICOM/PNG/JPEG folders, the RSNA challenge
layout, frontal-view selection with reasons, and no patient identifier in anything written."""

from __future__ import annotations

import csv
import json
import os
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from dicom_builder import identifying_header, needles, radiograph, ramp, save, structured_report
from PIL import Image
from pydicom.uid import JPEG2000Lossless, RLELossless

from cfxray.cli import main
from cfxray.data.manifest import read_manifest
from cfxray.lineage import read_lineage

SALT = "test-salt-0123456789abcdef-not-secret"


@pytest.fixture
def salt(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CFXRAY_DEID_SALT", SALT)
    return SALT


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _ingest(src: Path, out: Path, *extra: str) -> int:
    return main(["data", "ingest", str(src), "--out", str(out), "--workers", "1",
                 "--params", os.devnull, *extra])


def _png(path: Path, pixels: np.ndarray, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **kwargs)


def _compressed(ds, syntax):
    ds.compress(syntax)
    return ds


@pytest.fixture
def mixed(tmp_path: Path) -> tuple[Path, dict[str, dict[str, str]]]:
    """A flat NORMAL/PNEUMONIA folder of DICOM, PNG and JPEG, with everything that must be
    quarantined; DICOM headers carry fake identifiers, some files sit in folders and under names
    made of them (as hospital exports do)."""
    src = tmp_path / "hospital"
    people = {n: identifying_header(n) for n in range(1, 6)}
    rng = np.random.default_rng(0)

    def header(n: int) -> dict[str, str]:  # a new image (SOP instance) of patient n
        values = dict(people[n])
        values["SOPInstanceUID"] = f"{values['SOPInstanceUID']}.{rng.integers(1, 10**6)}"
        return values

    normal, pneumonia = src / "NORMAL", src / "PNEUMONIA"
    save(radiograph(ramp(), header=header(1)), normal / "chest_12bit.dcm")
    save(radiograph(65535 - ramp(top=65535), photometric="MONOCHROME1", bits_stored=16,
                    view="AP", header=header(2)), normal / "chest_mono1_16bit.dcm")
    save(_compressed(radiograph(ramp(), window=(2048, 2000), header=header(3)), JPEG2000Lossless),
         normal / "IM0003")  # no extension: found by its DICM marker
    save(radiograph(ramp(), view="LL", header=header(1)), normal / "lateral.dcm")
    save(radiograph(ramp(), view=None, header=header(1)), normal / "no_view.dcm")
    save(radiograph(ramp(), frames=3, header=header(2)), normal / "cine.dcm")
    _png(normal / "normal_a.png", rng.integers(0, 255, (40, 36), dtype=np.uint8))
    _png(normal / "normal_b.jpeg", rng.integers(0, 255, (30, 44), dtype=np.uint8), quality=90)

    h4 = people[4]
    by_name = pneumonia / h4["PatientName"] / h4["StudyInstanceUID"]
    lut = np.round((np.arange(4096) / 4095) ** 0.5 * 4095).astype(int)
    first = header(4)
    save(radiograph(ramp(), voi_lut=lut, header=first), by_name / f"{first['SOPInstanceUID']}.dcm")
    second = header(4)
    save(_compressed(radiograph(ramp(), rescale=(1.0, -512.0), header=second), RLELossless),
         by_name / f"{second['SOPInstanceUID']}.dcm")
    save(radiograph(ramp(), burned_in="YES", header=header(5)), pneumonia / "burned.dcm")
    save(radiograph(ramp(), body_part="KNEE", header=header(5)), pneumonia / "knee.dcm")
    save(structured_report(header(5)), pneumonia / "report.dcm")
    broken = save(radiograph(ramp(), header=header(5)), pneumonia / "broken.dcm").read_bytes()
    (pneumonia / "broken.dcm").write_bytes(broken[:-700])
    _png(pneumonia / "pneu_a.png", rng.integers(0, 255, (50, 50), dtype=np.uint8))
    _png(pneumonia / "pneu_b.jpg", rng.integers(0, 255, (33, 47), dtype=np.uint8), quality=90)
    return src, people


EXPECTED_QUARANTINE = {
    "lateral view (ViewPosition LL)": 1, "unknown view (no ViewPosition)": 1,
    "multi-frame object (3 frames)": 1, "burned-in annotation (BurnedInAnnotation YES)": 1,
    "not a chest image (BodyPartExamined KNEE)": 1,
    "not an image: DICOM object without pixel data (Basic Text SR Storage)": 1,
}


def test_mixed_folder_becomes_one_dataset_with_reasons(
        mixed, tmp_path: Path, salt: str, capsys: pytest.CaptureFixture) -> None:
    src, _ = mixed
    out = tmp_path / "ingested"
    assert _ingest(src, out) == 0
    rows = read_manifest(out)
    assert Counter(r["source_format"] for r in rows) == {"DICOM": 5, "PNG": 2, "JPEG": 2}
    assert Counter(r["label"] for r in rows) == {"NORMAL": 5, "PNEUMONIA": 4}
    quarantine = _read_csv(out / "quarantine.csv")
    reasons = Counter(q["reason"] for q in quarantine if not q["reason"].startswith("corrupt"))
    assert reasons == EXPECTED_QUARANTINE
    assert sum(q["reason"].startswith("corrupt DICOM") for q in quarantine) == 1
    dicom = {r["source_mode"] + "/" + r["bits_stored"]: r for r in rows
             if r["source_format"] == "DICOM"}
    assert set(dicom) == {"MONOCHROME2/12", "MONOCHROME1/16"}  # (12-bit ones collapse)
    mono1 = np.asarray(Image.open(out / dicom["MONOCHROME1/16"]["file"]))
    assert mono1[:, 0].max() <= 2 and mono1[:, -1].min() >= 253  # air dark, as MONOCHROME2
    transforms = {r["transforms"] for r in rows if r["source_format"] == "DICOM"}
    assert "VOI LUT (VOI LUT Sequence item 1)" in transforms
    assert "window (centre 2048, width 2000, LINEAR)" in transforms
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dicom"]["bits_stored"] == {"12": 4, "16": 1}
    assert summary["dicom"]["photometric"] == {"MONOCHROME2": 4, "MONOCHROME1": 1}
    assert summary["dicom"]["transforms"]["inverted"] == 1
    assert summary["quarantined"] == 7 and summary["formats"]["DICOM"] == 5
    printed = capsys.readouterr().out
    assert "quarantined 7 file(s) (burned-in annotation 1, corrupt DICOM 1, lateral view 1," \
        in printed
    assert "DICOM: 5 image(s) kept" in printed


def test_patient_pseudonyms_keep_a_patients_images_together(mixed, tmp_path: Path,
                                                            salt: str) -> None:
    src, _ = mixed
    out = tmp_path / "ingested"
    assert _ingest(src, out) == 0
    rows = read_manifest(out)
    by_patient = Counter(r["patient_id"] for r in rows if r["source_format"] == "DICOM")
    assert sorted(by_patient.values()) == [1, 1, 1, 2]  # patient 4's two images share one
    twice = next(p for p, n in by_patient.items() if n == 2)
    assert twice.startswith("pid-") and len(twice) == 20
    assert len({r["split"] for r in rows if r["patient_id"] == twice}) == 1
    assert len({r["study_id"] for r in rows if r["patient_id"] == twice}) == 1
    assert all(Path(r["file"]).stem.startswith(r["patient_id"]) for r in rows
               if r["source_format"] == "DICOM")


def test_a_different_salt_gives_different_pseudonyms(mixed, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    src, _ = mixed
    found = []
    for k, value in enumerate((SALT, SALT + "-other")):
        monkeypatch.setenv("CFXRAY_DEID_SALT", value)
        assert _ingest(src, tmp_path / f"out{k}") == 0
        found.append({r["patient_id"] for r in read_manifest(tmp_path / f"out{k}")
                      if r["source_format"] == "DICOM"})
    assert len(found[0]) == len(found[1]) == 4 and not found[0] & found[1]


def test_selection_can_keep_other_views_and_burned_in_images_flagged(mixed, tmp_path: Path,
                                                                     salt: str) -> None:
    src, _ = mixed
    out = tmp_path / "ingested"
    assert _ingest(src, out, "--views", "PA,AP,LL,UNKNOWN", "--keep-burned-in") == 0
    rows = read_manifest(out)
    assert Counter(r["view"] for r in rows if r["source_format"] == "DICOM") == {
        "PA": 5, "AP": 1, "LL": 1, "": 1}
    assert [r["burned_in_annotation"] for r in rows].count("YES") == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dicom"]["burned_in_annotation_flagged"] == 1
    assert summary["dicom"]["selection"]["views"] == ["PA", "AP", "LL", "UNKNOWN"]
    assert "lateral view" not in summary["quarantine_reasons"]


def test_dicom_without_a_salt_is_refused_before_anything_is_written(
        mixed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    monkeypatch.delenv("CFXRAY_DEID_SALT", raising=False)
    src, _ = mixed
    out = tmp_path / "ingested"
    assert _ingest(src, out, "--deid-salt-file", str(tmp_path / "missing-salt")) == 2
    assert "needs a de-identification salt" in capsys.readouterr().err
    assert not out.exists()
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "salt").write_text("0123456789abcdef0123456789abcdef\n")
    assert _ingest(src, out, "--deid-salt-file", str(repo / "salt")) == 2
    assert "inside the repository" in capsys.readouterr().err
    (tmp_path / "short").write_text("abc\n")
    assert _ingest(src, out, "--deid-salt-file", str(tmp_path / "short")) == 2
    assert "use at least 16" in capsys.readouterr().err


def test_salt_file_works_and_only_its_fingerprint_is_recorded(
        mixed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CFXRAY_DEID_SALT", raising=False)
    src, _ = mixed
    (tmp_path / "salt").write_text(SALT + "\n")
    out = tmp_path / "ingested"
    assert _ingest(src, out, "--deid-salt-file", str(tmp_path / "salt")) == 0
    record = read_lineage(out)["deidentification"]
    assert record["method"] == "HMAC-SHA256" and len(record["salt_fingerprint"]) == 16
    assert json.loads((out / "summary.json").read_text())["deidentification"] == record
    assert "deid_salt_file" not in read_lineage(out)["params"]


def _rsna(tmp_path: Path) -> tuple[Path, list[str]]:
    """The RSNA challenge layout: DICOMs named by patientId and a label CSV with one row per
    box (several for some patients), plus an image without a label."""
    src = tmp_path / "rsna"
    ids = [str(uuid.UUID(int=int(n) * 7919 + 12345)) for n in range(8)]
    rows = []
    for n, patient in enumerate(ids[:7]):
        header = {**identifying_header(10 + n), "PatientID": patient}
        save(radiograph(ramp(), view="PA" if n % 2 else "AP", header=header),
             src / "stage_2_train_images" / f"{patient}.dcm")
        boxes = n % 3  # 0: one row with Target 0; 1-2 boxes: Target 1
        rows += [[patient, "", "", "", "", "0"]] if boxes == 0 else \
            [[patient, "10", "20", "30", "40", "1"] for _ in range(boxes)]
    save(radiograph(ramp(), header={**identifying_header(30), "PatientID": ids[7]}),
         src / "stage_2_test_images" / f"{ids[7]}.dcm")
    with (src / "stage_2_train_labels.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["patientId", "x", "y", "width", "height", "Target"])
        writer.writerows(rows)
    return src, ids


def test_rsna_challenge_layout_one_label_per_image(tmp_path: Path, salt: str) -> None:
    src, ids = _rsna(tmp_path)
    out = tmp_path / "ingested"
    assert _ingest(src, out) == 0
    rows = read_manifest(out)
    assert Counter(r["label"] for r in rows) == {"NORMAL": 3, "PNEUMONIA": 4}
    assert len({r["patient_id"] for r in rows}) == 7
    quarantine = _read_csv(out / "quarantine.csv")
    assert [q["reason"] for q in quarantine] == ["no label (patientId not in the label CSV)"]
    assert quarantine[0]["source"].startswith("sha256-")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["layout"] == "rsna-challenge"
    assert summary["dicom"]["views"] == {"AP": 4, "PA": 3}
    written = "\n".join(str(p) for p in out.rglob("*"))
    assert not any(patient in written for patient in ids)


def _scan(roots: list[Path], printed: str, secrets: list[str]) -> list[str]:
    """Every (file, identifier) pair where an identifier appears, in any case, as UTF-8 text
    or raw bytes, in a file's name or content, or in what the commands printed."""
    found = []
    lowered = [(s, s.lower().encode()) for s in secrets]
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            blob = path.read_bytes().lower() + b"\0" + str(path).lower().encode()
            found += [f"{path}: {s}" for s, low in lowered if low in blob]
    found += [f"printed: {s}" for s, low in lowered if low in printed.lower().encode()]
    return found


def test_no_identifier_reaches_any_file_written_or_printed(
        mixed, tmp_path: Path, salt: str, capsys: pytest.CaptureFixture) -> None:
    src, people = mixed
    rsna, ids = _rsna(tmp_path)
    secrets = [s for header in people.values() for s in needles(header)]
    secrets += [s for n in range(10, 18) for s in needles(identifying_header(n))] + ids
    secrets += [identifying_header(30)[k] for k in ("PatientName", "StudyInstanceUID")]
    # The fake identifiers really are in the sources (names and headers) the scan guards.
    assert len(_scan([src, rsna], "", secrets)) > len(secrets)
    outputs = []
    for name, source, workers in (("mixed", src, "2"), ("rsna", rsna, "1")):
        ingested, prepared = tmp_path / f"{name}_ingested", tmp_path / f"{name}_prepared"
        assert main(["data", "ingest", str(source), "--out", str(ingested), "--workers", workers,
                     "--resplit", "--views", "PA,AP,LL,UNKNOWN", "--keep-burned-in",
                     "--params", os.devnull]) == 0
        assert main(["data", "preprocess", str(ingested), "--out", str(prepared), "--size", "16",
                     "--params", os.devnull]) == 0
        outputs += [ingested, prepared]
        assert (ingested / "lineage.json").is_file() and (prepared / "train.pt").is_file()
    captured = capsys.readouterr()
    assert _scan(outputs, captured.out + captured.err, secrets) == []


def test_without_a_patient_id_a_study_still_groups_its_images(tmp_path: Path, salt: str) -> None:
    src = tmp_path / "flat"
    study = identifying_header(40)["StudyInstanceUID"]
    for i in range(2):
        save(radiograph(ramp(), header={"StudyInstanceUID": study}), src / "NORMAL" / f"s{i}.dcm")
    for i in range(2):
        save(radiograph(ramp(cols=40 + i)), src / "PNEUMONIA" / f"lone{i}.dcm")
    out = tmp_path / "ingested"
    assert _ingest(src, out) == 0
    patients = Counter(r["patient_id"] for r in read_manifest(out))
    assert sorted(patients.values()) == [1, 1, 2]
