"""Phantom options: the simple level unchanged, the hard level's invariants, the shortcut marker."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cfxray.cli import main
from cfxray.conventions import SPLITS
from cfxray.data.manifest import read_manifest
from cfxray.data.phantom import SHORTCUT_REGION, render
from cfxray.data.phantom_dataset import marker_rates, plan
from cfxray.data.tensors import load_split

REFERENCE = Path(__file__).parent / "data" / "phantom_simple_reference.npz"


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)


def test_simple_level_renders_exactly_what_it_rendered_before_the_options() -> None:
    """The reference was rendered by the generator before the realism level and the shortcut
    marker existed; the committed DVC data and measured results depend on these pixels."""
    reference = np.load(REFERENCE)
    for i in range(6):
        r = render(40, seed=3, index=i, patient=i // 2, pneumonia=i % 2 == 1)
        assert np.array_equal(r.image, reference[f"image_{i}"]), i
        assert np.array_equal(r.lung_mask, reference[f"lung_{i}"]), i
        assert np.array_equal(r.lesion_mask, reference[f"lesion_{i}"]), i
        if i % 2:
            assert np.array_equal(r.twin, reference[f"twin_{i}"]), i
        assert r.shortcut_mask is None and r.shortcut_twin is None


@pytest.fixture(scope="module")
def hard() -> list:
    return [render(64, seed=4, index=i, patient=i, pneumonia=True, realism="hard")
            for i in range(40)]


def test_hard_twin_differs_only_inside_the_lesion_mask_which_lies_in_the_lungs(hard) -> None:
    for r in hard:
        assert r.lesion_mask.any()
        assert not (r.lesion_mask & ~r.lung_mask).any()
        assert not ((r.image != r.twin) & ~r.lesion_mask).any()
        assert (r.image.astype(int) - r.twin)[r.lesion_mask].mean() > 0


def test_hard_lesions_vary_in_density_and_are_often_bilateral(hard) -> None:
    contrast = [(r.image.astype(int) - r.twin)[r.lesion_mask].mean() for r in hard]
    assert min(contrast) < 10 < 25 < max(contrast)  # faint ground glass up to dense consolidation
    columns = np.arange(64)
    # bilateral: lesion pixels in both lungs (each side of the lungs' midline)
    both = []
    for r in hard:
        lung_cols = columns[r.lung_mask.any(axis=0)]
        middle = (lung_cols.min() + lung_cols.max()) / 2
        lesion_cols = columns[r.lesion_mask.any(axis=0)]
        both.append(lesion_cols.min() < middle < lesion_cols.max())
    assert 0.2 < np.mean(both) < 0.8


def test_hard_class_does_not_change_anatomy_vessels_noise_or_distractors() -> None:
    for index in range(4):
        normal = render(40, seed=5, index=index, patient=index, pneumonia=False, realism="hard")
        pneumonia = render(40, seed=5, index=index, patient=index, pneumonia=True, realism="hard")
        assert np.array_equal(normal.image, pneumonia.twin)
        simple = render(40, seed=5, index=index, patient=index, pneumonia=False)
        assert not np.array_equal(normal.image, simple.image)


def test_marker_rates_keep_the_overall_rate_and_free_the_test_split() -> None:
    assert marker_rates("train", 0.5, 1.0) == (0.0, 1.0)
    assert marker_rates("val", 0.5, 0.8) == pytest.approx((0.1, 0.9))
    assert marker_rates("train", 0.2, 1.0) == pytest.approx((0.0, 0.4))
    assert marker_rates("test", 0.5, 1.0) == (0.5, 0.5)
    assert all(spec.marker is None for spec in plan(50, 0, 0.5, [0.7, 0.15, 0.15]))


def test_marker_frequency_by_split_and_class() -> None:
    specs = plan(600, seed=2, pneumonia_fraction=0.5, split_fractions=[0.7, 0.15, 0.15],
                 shortcut_rate=0.5, shortcut_confounding=0.8)
    without = plan(600, seed=2, pneumonia_fraction=0.5, split_fractions=[0.7, 0.15, 0.15])
    assert [(s.label, s.patient, s.split) for s in specs] == [
        (s.label, s.patient, s.split) for s in without]  # the option changes nothing else
    groups = Counter((s.split, s.label) for s in specs)
    marked = Counter((s.split, s.label) for s in specs if s.marker)
    for split in SPLITS:
        for label, rate in enumerate(marker_rates(split, 0.5, 0.8)):
            assert marked[(split, label)] == round(rate * groups[(split, label)])
    assert marked[("train", 1)] > 5 * marked[("train", 0)]


def test_marker_changes_only_its_region_and_draws_nothing() -> None:
    x0, y0, x1, y1 = SHORTCUT_REGION
    for pneumonia in (False, True):
        off = render(48, seed=6, index=1, patient=1, pneumonia=pneumonia, marker=False)
        on = render(48, seed=6, index=1, patient=1, pneumonia=pneumonia, marker=True)
        plain = render(48, seed=6, index=1, patient=1, pneumonia=pneumonia)
        assert np.array_equal(off.image, plain.image)  # off is the plain rendering
        assert np.array_equal(on.shortcut_twin, off.image)
        assert np.array_equal(off.shortcut_twin, on.image)
        region = on.shortcut_mask
        assert np.array_equal(region, off.shortcut_mask)
        changed = on.image != off.image
        assert changed.any() and not (changed & ~region).any()
        assert not (region & on.lung_mask).any()
        assert np.array_equal(on.lesion_mask, off.lesion_mask)
        if pneumonia:  # the lesion twin carries the marker as its image does
            assert not ((on.image != on.twin) & ~on.lesion_mask).any()
            assert not ((on.twin != off.twin) & ~region).any()
    rows, cols = np.nonzero(region)
    pixel = 2 / 48
    assert (cols.min() + 0.5) * pixel - 1 >= x0 and (cols.max() + 0.5) * pixel - 1 <= x1
    assert (rows.min() + 0.5) * pixel - 1 >= y0 and (rows.max() + 0.5) * pixel - 1 <= y1


@pytest.fixture(scope="module")
def marked_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("marked") / "phantom"
    assert main(["data", "phantom", "--out", str(out), "--n", "40", "--size", "48", "--seed", "1",
                 "--workers", "1", "--realism", "hard", "--shortcut-rate", "0.5",
                 "--shortcut-confounding", "1", "--params", os.devnull]) == 0
    return out


def test_marker_files_manifest_and_prepared_tensors(marked_raw: Path, tmp_path: Path) -> None:
    rows = read_manifest(marked_raw)
    for row in rows:
        image = _png(marked_raw / row["file"])
        toggled = _png(marked_raw / row["shortcut_twin"])
        region = _png(marked_raw / row["shortcut_mask"]) > 127
        assert not ((image != toggled) & ~region).any() and (image != toggled).any()
        if row["split"] != "test":
            assert row["shortcut"] == ("1" if row["label"] == "PNEUMONIA" else "0")
    out = tmp_path / "prepared"
    assert main(["data", "preprocess", str(marked_raw), "--out", str(out), "--size", "32",
                 "--params", os.devnull]) == 0
    for split in SPLITS:
        data = load_split(out, split)
        shortcut = {r["file"]: r["shortcut"] == "1" for r in rows}
        assert data.has_shortcut.tolist() == [shortcut[f] for f in data.files]
        # after resizing too, an image and its toggled twin differ only on the region
        assert not ((data.images != data.shortcut_twins) & ~data.shortcut_masks).any()
        assert torch.equal(data.shortcut_masks[0], data.shortcut_masks[-1])


def test_without_the_option_no_shortcut_columns_or_tensors(tmp_path: Path) -> None:
    raw, out = tmp_path / "raw", tmp_path / "prepared"
    assert main(["data", "phantom", "--out", str(raw), "--n", "8", "--size", "32",
                 "--workers", "1", "--params", os.devnull]) == 0
    header = (raw / "manifest.csv").read_text().splitlines()[0]
    assert "shortcut" not in header and not (raw / "shortcut_twins").exists()
    assert "shortcut_mask" not in read_manifest(raw)[0]
    assert main(["data", "preprocess", str(raw), "--out", str(out), "--size", "16",
                 "--params", os.devnull]) == 0
    data = load_split(out, "train")
    assert data.shortcut_masks is None and data.has_shortcut is None
    assert "shortcut_masks" not in torch.load(out / "train.pt", weights_only=False)


def test_bad_option_values_are_one_line_errors(tmp_path: Path, capsys) -> None:
    assert main(["data", "phantom", "--out", str(tmp_path / "a"), "--n", "4",
                 "--shortcut-confounding", "1.5", "--params", os.devnull]) == 2
    assert "--shortcut-confounding must lie in [0, 1]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["data", "phantom", "--out", str(tmp_path / "b"), "--realism", "photoreal"])
