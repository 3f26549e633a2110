"""Preprocess: SplitData tensors per split, meta.json, masks and twins carried over."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cfxray.cli import main
from cfxray.conventions import SPLITS
from cfxray.data.manifest import read_manifest
from cfxray.data.preprocess import resize_square
from cfxray.data.tensors import load_meta, load_split
from cfxray.lineage import read_lineage, sha256_tree


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("raw") / "phantom"
    assert main(["data", "phantom", "--out", str(out), "--n", "40", "--size", "48", "--seed", "1",
                 "--workers", "1", "--params", os.devnull]) == 0
    return out


def _preprocess(raw: Path, out: Path, size: int, mode: str = "pad") -> None:
    assert main(["data", "preprocess", str(raw), "--out", str(out), "--size", str(size),
                 "--resize", mode, "--params", os.devnull]) == 0


def test_splits_meta_and_lineage(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    _preprocess(raw, out, 32)
    rows = read_manifest(raw)
    meta = load_meta(out)
    assert meta["size"] == 32 and meta["resize"] == "pad"
    assert meta["source_sha256"] == sha256_tree(raw)
    assert read_lineage(out)["inputs"]["dataset"]["sha256"] == sha256_tree(raw)
    total = 0
    for split in SPLITS:
        data = load_split(out, split)
        split_rows = [r for r in rows if r["split"] == split]
        total += len(data)
        assert data.images.dtype == torch.uint8 and data.images.shape[1:] == (32, 32)
        assert data.lesion_masks.dtype == torch.bool and data.twins.dtype == torch.uint8
        assert sorted(data.files) == sorted(r["file"] for r in split_rows)
        assert meta["counts"][split]["PNEUMONIA"] == int(data.labels.sum())
        assert torch.equal(data.has_twin, data.labels == 1)
        # Lesions exactly on PNEUMONIA images, and images at the same index are the same file.
        assert torch.equal(data.lesion_masks.flatten(1).any(1), data.labels == 1)
        patients = {r["file"]: r["patient_id"] for r in split_rows}
        assert data.patient_ids == [patients[f] for f in data.files]
    assert total == len(rows)


def test_same_size_keeps_pixels_and_masks_exactly(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "same"
    _preprocess(raw, out, 48)
    data = load_split(out, "train")
    for i, file in enumerate(data.files):
        with Image.open(raw / file) as img:
            assert np.array_equal(data.images[i].numpy(), np.asarray(img))


def test_twin_still_differs_only_inside_the_resized_mask(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "small"
    _preprocess(raw, out, 28)
    for split in SPLITS:
        data = load_split(out, split)
        differs = data.images != data.twins
        sick = data.has_twin
        assert not (differs[sick] & ~data.lesion_masks[sick]).any()
        assert differs[sick].flatten(1).any(1).all()


def test_real_data_without_masks_gets_none(tmp_path: Path) -> None:
    src = tmp_path / "flat"
    rng = np.random.default_rng(0)
    for label in ("NORMAL", "PNEUMONIA"):
        for i in range(10):
            (src / label).mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 255, (30, 50), dtype=np.uint8)
            Image.fromarray(pixels).save(src / label / f"{label}-{i}.png")
    ingested = tmp_path / "ingested"
    assert main(["data", "ingest", str(src), "--out", str(ingested), "--workers", "1",
                 "--params", os.devnull]) == 0
    out = tmp_path / "prepared"
    _preprocess(ingested, out, 24, mode="crop")
    data = load_split(out, "train")
    assert data.lesion_masks is None and data.twins is None and data.has_twin is None
    assert data.images.shape[1:] == (24, 24)


def test_pad_keeps_the_whole_image_and_crop_fills_the_square() -> None:
    wide = np.full((20, 40), 200.0)
    padded = resize_square(wide, 20, "pad")
    assert padded.shape == (20, 20)
    assert np.allclose(padded[5:15], 200) and np.allclose(padded[:5], 0) and np.allclose(padded[15:], 0)
    cropped = resize_square(wide, 20, "crop")
    assert np.allclose(cropped, 200)


def test_bad_input_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["data", "preprocess", str(tmp_path / "empty"), "--out", str(tmp_path / "o"),
                 "--params", os.devnull]) == 2
    assert "manifest.csv missing" in capsys.readouterr().err
