"""Phantom dataset: determinism, mask and twin correctness, patient-aware splits, CLI."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cfxray.cli import main
from cfxray.conventions import SPLITS
from cfxray.data.contact_sheet import LESION_RGB, LUNG_RGB
from cfxray.data.manifest import read_manifest
from cfxray.data.phantom import render
from cfxray.data.phantom_dataset import plan
from cfxray.lineage import read_lineage, sha256_file, sha256_tree


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("phantom") / "data"
    code = main(["data", "phantom", "--out", str(out), "--n", "60", "--size", "48",
                 "--seed", "3", "--workers", "1", "--params", os.devnull])
    assert code == 0
    return out


def test_same_arguments_give_identical_bytes_for_any_worker_count(phantom_dir: Path,
                                                                  tmp_path: Path) -> None:
    again = tmp_path / "again"
    assert main(["data", "phantom", "--out", str(again), "--n", "60", "--size", "48",
                 "--seed", "3", "--workers", "2", "--params", os.devnull]) == 0
    assert sha256_tree(again) == sha256_tree(phantom_dir)
    assert (again / "manifest.csv").read_bytes() == (phantom_dir / "manifest.csv").read_bytes()


def test_another_seed_gives_other_images() -> None:
    a = render(48, seed=1, index=0, patient=0, pneumonia=True)
    b = render(48, seed=2, index=0, patient=0, pneumonia=True)
    assert not np.array_equal(a.image, b.image)


def test_layout_manifest_and_lineage(phantom_dir: Path) -> None:
    rows = read_manifest(phantom_dir)
    assert len(rows) == 60
    assert {r["label"] for r in rows} == {"NORMAL", "PNEUMONIA"}
    assert sum(r["label"] == "PNEUMONIA" for r in rows) == 30
    for row in rows:
        path = phantom_dir / row["file"]
        assert row["file"].startswith(f"{row['split']}/{row['label']}/")
        assert sha256_file(path) == row["sha256"]
        assert _png(path).shape == (48, 48)
        assert (row["twin"] != "") == (row["label"] == "PNEUMONIA")
    record = read_lineage(phantom_dir)
    assert record["sha256"] == sha256_tree(phantom_dir)
    assert record["params"]["seed"] == 3
    assert (phantom_dir / "summary.json").exists()
    with Image.open(phantom_dir / "contact_sheet.png") as sheet:
        pixels = np.asarray(sheet.convert("RGB")).reshape(-1, 3)
    colours = {tuple(p) for p in np.unique(pixels, axis=0)}
    assert LESION_RGB in colours and LUNG_RGB in colours  # masks are outlined


def test_lesion_mask_is_nonempty_exactly_for_pneumonia_and_inside_the_lungs(
        phantom_dir: Path) -> None:
    for row in read_manifest(phantom_dir):
        lesion = _png(phantom_dir / row["lesion_mask"]) > 127
        lung = _png(phantom_dir / row["lung_mask"]) > 127
        assert lung.sum() > 0.1 * lung.size
        assert lesion.any() == (row["label"] == "PNEUMONIA"), row["file"]
        assert not (lesion & ~lung).any(), f"lesion outside the lungs in {row['file']}"


def test_twin_differs_from_its_image_only_inside_the_lesion_mask(phantom_dir: Path) -> None:
    for row in read_manifest(phantom_dir):
        if row["label"] != "PNEUMONIA":
            continue
        image = _png(phantom_dir / row["file"]).astype(int)
        twin = _png(phantom_dir / row["twin"]).astype(int)
        lesion = _png(phantom_dir / row["lesion_mask"]) > 127
        difference = image != twin
        assert not (difference & ~lesion).any(), row["file"]
        # The opacity is visible: brighter than the twin over much of the mask.
        assert (image - twin)[lesion].mean() > 8, row["file"]


def test_class_does_not_change_anatomy_noise_or_distractors() -> None:
    """A NORMAL rendering equals the twin of the PNEUMONIA rendering of the same draw."""
    for index in range(8):
        normal = render(40, seed=5, index=index, patient=index, pneumonia=False)
        pneumonia = render(40, seed=5, index=index, patient=index, pneumonia=True)
        assert np.array_equal(normal.image, pneumonia.twin)
        assert np.array_equal(normal.lung_mask, pneumonia.lung_mask)


def test_distractors_appear_in_both_classes() -> None:
    """Bright clutter (markers, wires, electrodes) is common in NORMAL and PNEUMONIA alike."""
    bright = defaultdict(list)
    for index in range(80):
        r = render(48, seed=11, index=index, patient=index, pneumonia=index % 2 == 1)
        reference = r.twin if r.twin is not None else r.image
        bright[index % 2].append(bool((reference >= 235).any()))
    rates = [np.mean(bright[k]) for k in (0, 1)]
    assert min(rates) > 0.4, rates


def test_splits_are_patient_aware_and_patients_share_anatomy(phantom_dir: Path) -> None:
    splits_of = defaultdict(set)
    for row in read_manifest(phantom_dir):
        splits_of[row["patient_id"]].add(row["split"])
    assert all(len(s) == 1 for s in splits_of.values())
    specs = plan(300, seed=0, pneumonia_fraction=0.5, split_fractions=[0.7, 0.15, 0.15])
    per_split = {s: sum(spec.split == s for spec in specs) for s in SPLITS}
    assert 190 <= per_split["train"] <= 230 and per_split["test"] >= 30
    assert len({spec.patient for spec in specs}) < 300  # some patients have several images


def test_bad_arguments_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "phantom", "--out", str(tmp_path / "x"), "--n", "0",
                 "--params", os.devnull]) == 2
    assert "--n must be at least 1" in capsys.readouterr().err
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "precious.txt").write_text("keep me")
    assert main(["data", "phantom", "--out", str(occupied), "--n", "4",
                 "--params", os.devnull]) == 2
    assert (occupied / "precious.txt").exists()


def test_params_file_supplies_defaults(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(f"phantom:\n  out: {tmp_path / 'from_params'}\n  n: 6\n  size: 32\n"
                      "  seed: 9\n  workers: 1\n  contact_sheet: 0\n")
    assert main(["data", "phantom", "--params", str(params)]) == 0
    rows = read_manifest(tmp_path / "from_params")
    assert len(rows) == 6
    assert not (tmp_path / "from_params" / "contact_sheet.png").exists()
