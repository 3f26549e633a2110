"""Ingest of real-looking X-ray folders: decoding, quarantine, duplicates, patient-aware splits."""

from __future__ import annotations

import csv
import json
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cfxray.cli import main
from cfxray.data.images import ImageRejected, decode_gray, to_gray8
from cfxray.data.manifest import read_manifest
from cfxray.data.splits import patient_id_from_name
from cfxray.lineage import read_lineage, sha256_file

_EXIF_ORIENTATION = 0x0112


def _xray(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A smooth gradient with noise: compresses like a radiograph, not like a flat colour."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = 60 + 120 * np.exp(-(((xx - w / 2) / w) ** 2 + ((yy - h / 2) / h) ** 2) * 3)
    return np.clip(base + rng.normal(0, 12, (h, w)), 0, 255).astype(np.uint8)


def _save(path: Path, img: Image.Image, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kwargs)
    return path


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def kermany(tmp_path: Path) -> Path:
    """A Kermany-style tree: mixed sizes and modes, broken files, duplicates, a leaking patient."""
    rng = np.random.default_rng(0)
    src = tmp_path / "chest_xray"
    sizes = [(40, 52), (64, 48), (37, 37), (80, 60)]
    for k, split in enumerate(("train", "val", "test"), start=1):
        for i in range(6):
            w, h = sizes[i % 4]
            _save(src / split / "NORMAL" / f"IM-{split[:2]}{i:02d}-0001.jpeg",
                  Image.fromarray(_xray(rng, w, h)), quality=90)
            patient = f"person{k}{i:02d}"
            rgb = Image.fromarray(np.stack([_xray(rng, w, h)] * 3, axis=-1))
            _save(src / split / "PNEUMONIA" / f"{patient}_bacteria_{i}.jpeg", rgb, quality=90)
            _save(src / split / "PNEUMONIA" / f"{patient}_virus_{i + 50}.jpeg",
                  Image.fromarray(_xray(rng, h, w)), quality=90)
    # 16-bit PNG with a 12-bit range, as detector exports often are.
    wide = (_xray(rng, 50, 40).astype(np.uint16) * 16)
    _save(src / "train" / "NORMAL" / "IM-9000-0001.png", Image.fromarray(wide, mode="I;16"))
    # EXIF says: rotate 90 degrees to display; stored 60 wide, 30 high.
    exif = Image.Exif()
    exif[_EXIF_ORIENTATION] = 6
    _save(src / "train" / "NORMAL" / "IM-9001-0001.jpeg",
          Image.fromarray(_xray(rng, 60, 30)), exif=exif.tobytes())
    # Broken files.
    good = (src / "train" / "NORMAL" / "IM-tr00-0001.jpeg").read_bytes()
    (src / "train" / "NORMAL" / "IM-9002-0001.jpeg").write_bytes(good[: len(good) // 2])
    (src / "train" / "NORMAL" / "notes.jpeg").write_text("this is not an image\n")
    (src / "train" / "PNEUMONIA" / "person99_virus_1.jpeg").write_bytes(b"")
    (src / "test" / "NORMAL" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    # An exact duplicate in another split, and identical bytes under both labels.
    (src / "test" / "NORMAL" / "IM-dup0-0001.jpeg").write_bytes(good)
    other = (src / "val" / "NORMAL" / "IM-va01-0001.jpeg").read_bytes()
    (src / "val" / "PNEUMONIA" / "person77_virus_3.jpeg").write_bytes(other)
    # A patient whose images the source put in two splits.
    leak = src / "train" / "PNEUMONIA" / "person100_bacteria_0.jpeg"
    _save(src / "test" / "PNEUMONIA" / "person100_bacteria_999.jpeg",
          Image.fromarray(_xray(rng, 44, 44)), quality=90)
    assert leak.exists()
    return src


def _ingest(src: Path, out: Path, *extra: str) -> int:
    return main(["data", "ingest", str(src), "--out", str(out), "--workers", "1",
                 "--params", os.devnull, *extra])


def test_every_usable_image_becomes_8bit_gray_png_with_a_manifest(kermany: Path,
                                                                 tmp_path: Path) -> None:
    out = tmp_path / "ingested"
    assert _ingest(kermany, out) == 0
    rows = read_manifest(out)
    # 54 generated, one lost to a label conflict, plus 16-bit, EXIF and leaking images.
    assert len(rows) == 54 - 1 + 3
    for row in rows:
        with Image.open(out / row["file"]) as img:
            assert img.format == "PNG" and img.mode == "L"
        assert sha256_file(out / row["file"]) == row["sha256"]
        assert row["lesion_mask"] == row["lung_mask"] == row["twin"] == ""
    summary = json.loads((out / "summary.json").read_text())
    assert summary["layout"] == "kermany"
    assert summary["sizes"]["width"]["min"] == 30 and summary["sizes"]["width"]["max"] == 80
    assert {"RGB", "L", "I;16"} <= set(summary["modes"])
    assert read_lineage(out)["inputs"]["source"]["sha256"]


def test_exif_orientation_is_applied_and_16bit_range_is_used(kermany: Path,
                                                             tmp_path: Path) -> None:
    gray, info = decode_gray(kermany / "train" / "NORMAL" / "IM-9001-0001.jpeg")
    assert (info["width"], info["height"]) == (60, 30)
    assert gray.shape == (60, 30)  # rotated upright: now 30 wide, 60 high
    wide, info = decode_gray(kermany / "train" / "NORMAL" / "IM-9000-0001.png")
    assert info["mode"].startswith("I")
    assert wide.dtype == np.uint8 and wide.min() == 0 and wide.max() == 255


def test_unusable_files_are_quarantined_with_reasons_and_the_run_goes_on(
        kermany: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "ingested"
    assert _ingest(kermany, out) == 0
    reasons = {r["source"]: r["reason"] for r in _read_csv(out / "quarantine.csv")}
    assert "truncated" in reasons["train/NORMAL/IM-9002-0001.jpeg"]
    assert "not an image" in reasons["train/NORMAL/notes.jpeg"]
    assert "not an image" in reasons["test/NORMAL/.DS_Store"]
    assert "empty" in reasons["train/PNEUMONIA/person99_virus_1.jpeg"]
    assert "both NORMAL and PNEUMONIA" in reasons["val/PNEUMONIA/person77_virus_3.jpeg"]
    assert "both NORMAL and PNEUMONIA" in reasons["val/NORMAL/IM-va01-0001.jpeg"]
    files = {Path(r["file"]).stem for r in read_manifest(out)}
    assert not {"IM-9002-0001", "notes", "person99_virus_1", "IM-va01-0001"} & files
    assert "quarantined 6 file(s)" in capsys.readouterr().out


def test_unsupported_mode_is_rejected() -> None:
    with pytest.raises(ImageRejected, match="unsupported image mode"):
        to_gray8(Image.new("RGBa", (4, 4)))


def test_exact_duplicates_are_kept_once_in_the_earliest_split(kermany: Path,
                                                              tmp_path: Path) -> None:
    out = tmp_path / "ingested"
    assert _ingest(kermany, out) == 0
    duplicates = _read_csv(out / "duplicates.csv")
    assert [(d["kept"], d["dropped"]) for d in duplicates] == [
        ("train/NORMAL/IM-tr00-0001.jpeg", "test/NORMAL/IM-dup0-0001.jpeg")]
    hashes = [r["source_sha256"] for r in _read_csv(out / "provenance.csv")]
    assert len(hashes) == len(set(hashes))


def test_source_splits_are_kept_and_leaking_patients_reported(kermany: Path,
                                                              tmp_path: Path) -> None:
    out = tmp_path / "ingested"
    assert _ingest(kermany, out) == 0
    rows = read_manifest(out)
    assert {r["split"] for r in rows if Path(r["file"]).stem.startswith("IM-va")} == {"val"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["patients_in_several_splits"] == 1
    assert summary["patients_in_several_splits_examples"] == {"person100": ["train", "test"]}


def test_resplit_puts_every_patient_in_one_split(kermany: Path, tmp_path: Path) -> None:
    out = tmp_path / "resplit"
    assert _ingest(kermany, out, "--resplit", "--seed", "4") == 0
    splits_of = defaultdict(set)
    for row in read_manifest(out):
        splits_of[row["patient_id"]].add(row["split"])
    assert len(splits_of["person100"]) == 1
    assert all(len(s) == 1 for s in splits_of.values())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["patients_in_several_splits"] == 0
    assert all(sum(c.values()) > 0 for c in summary["counts"].values())


@pytest.mark.parametrize("layout", ["flat", "rsna"])
def test_flat_and_rsna_layouts_get_patient_aware_splits(layout: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    src = tmp_path / layout
    folders = ("NORMAL", "PNEUMONIA") if layout == "flat" else ("0", "1")
    for k, folder in enumerate(folders):
        for i in range(12):
            name = f"person{i}_virus_{k}{i}.png" if layout == "flat" else f"{k}-{i:04d}.png"
            _save(src / folder / name, Image.fromarray(_xray(rng, 30 + i, 34)))
    out = tmp_path / f"{layout}_out"
    assert _ingest(src, out) == 0
    rows = read_manifest(out)
    assert len(rows) == 24
    assert {r["label"] for r in rows} == {"NORMAL", "PNEUMONIA"}
    splits_of = defaultdict(set)
    for row in rows:
        splits_of[row["patient_id"]].add(row["split"])
    assert all(len(s) == 1 for s in splits_of.values())
    assert {r["split"] for r in rows} == {"train", "val", "test"}


def test_unknown_layout_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "src" / "cats").mkdir(parents=True)
    assert _ingest(tmp_path / "src", tmp_path / "out") == 2
    assert "follows no known layout" in capsys.readouterr().err


@pytest.mark.parametrize(("name", "patient"), [
    ("person1946_bacteria_4874", "person1946"),
    ("person1946_virus_4875", "person1946"),
    ("IM-0115-0001", "IM-0115"),
    ("NORMAL2-IM-1427-0001", "NORMAL2-IM-1427"),
    ("0004cfab-14fd-4e49-80ba-63a80b6bddd6", "0004cfab-14fd-4e49-80ba-63a80b6bddd6"),
])
def test_patient_ids_from_kermany_file_names(name: str, patient: str) -> None:
    assert patient_id_from_name(name) == patient


def test_worker_count_does_not_change_the_result(kermany: Path, tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    assert _ingest(kermany, one, "--resplit") == 0
    assert main(["data", "ingest", str(kermany), "--out", str(two), "--workers", "2",
                 "--resplit", "--params", os.devnull]) == 0
    assert (one / "manifest.csv").read_bytes() == (two / "manifest.csv").read_bytes()
    assert (one / "quarantine.csv").read_bytes() == (two / "quarantine.csv").read_bytes()
