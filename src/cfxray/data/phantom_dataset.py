"""Write a phantom dataset: plan labels, patients and splits, render in parallel, record it all.

The plan comes from one seeded stream and every image from its own (seed, index) stream, so
the files are byte-identical whatever the number of worker processes. Which images carry the
shortcut marker comes from a stream of its own, drawn only when the marker is on, so the
default plan is unchanged by the option's existence.
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from cfxray.conventions import CLASSES, PNEUMONIA, SPLITS
from cfxray.data import manifest
from cfxray.data.phantom import REALISM_LEVELS, render
from cfxray.data.settings import Realism
from cfxray.data.splits import assign_splits
from cfxray.errors import UserError

_PLAN_STREAM, _SHORTCUT_STREAM = 0, 3
MAX_IMAGES_PER_PATIENT = 3
# Columns a phantom made with the shortcut marker (`shortcut_rate` > 0) carries beyond
# `MANIFEST_FIELDS`; consumers read them with `row.get`, since other datasets lack them.
SHORTCUT_FIELDS = (
    "shortcut",  # "1" the image carries the shortcut marker, "0" it does not
    "shortcut_mask",  # relative path of the marker's region (same for every image)
    "shortcut_twin",  # relative path of the image rendered with the marker toggled
)


@dataclass(frozen=True)
class ImageSpec:
    index: int
    label: int
    patient: int
    split: str
    marker: bool | None = None  # carries the shortcut marker; None: the option is off

    @property
    def stem(self) -> str:
        return f"phantom_p{self.patient:05d}_{self.index:06d}"

    @property
    def patient_id(self) -> str:
        return f"phantom-{self.patient:05d}"


def marker_rates(split: str, rate: float, confounding: float) -> tuple[float, float]:
    """P(marker | NORMAL) and P(marker | PNEUMONIA) in a split.

    In train and val the marker is tied to the label by `confounding` (0: independent, 1: as
    far as `rate` allows, e.g. every PNEUMONIA and no NORMAL image at rate 0.5) while a
    balanced split keeps the overall rate; in test it is independent of the label, so a
    classifier that learnt it loses accuracy there and the evaluation can catch it.
    """
    if split == "test":
        return rate, rate
    tie = confounding * min(rate, 1.0 - rate)
    return rate - tie, rate + tie


def plan(n: int, seed: int, pneumonia_fraction: float, split_fractions: Sequence[float],
         shortcut_rate: float = 0.0, shortcut_confounding: float = 0.0) -> list[ImageSpec]:
    """Labels, patients (1-3 images each, sharing anatomy), patient-aware splits and, when
    `shortcut_rate` > 0, which images carry the shortcut marker (exact counts per split and
    class)."""
    if n < 1:
        raise UserError(f"--n must be at least 1, got {n}")
    if not 0.0 <= pneumonia_fraction <= 1.0:
        raise UserError(f"--pneumonia-fraction must lie in [0, 1], got {pneumonia_fraction}")
    for name, value in (("shortcut-rate", shortcut_rate),
                        ("shortcut-confounding", shortcut_confounding)):
        if not 0.0 <= value <= 1.0:
            raise UserError(f"--{name} must lie in [0, 1], got {value}")
    rng = np.random.default_rng([seed, _PLAN_STREAM])
    n_pneumonia = round(n * pneumonia_fraction)
    labels = rng.permutation(np.array([PNEUMONIA] * n_pneumonia + [0] * (n - n_pneumonia)))
    patients: list[int] = []
    while len(patients) < n:
        count = int(rng.integers(1, MAX_IMAGES_PER_PATIENT + 1))
        patients.extend([patients[-1] + 1 if patients else 0] * count)
    patients = patients[:n]
    split_of = assign_splits(Counter(patients), split_fractions, rng)
    specs = [ImageSpec(i, int(labels[i]), patients[i], split_of[patients[i]]) for i in range(n)]
    if shortcut_rate == 0.0:
        return specs
    return _assign_markers(specs, seed, shortcut_rate, shortcut_confounding)


def _assign_markers(specs: list[ImageSpec], seed: int, rate: float,
                    confounding: float) -> list[ImageSpec]:
    rng = np.random.default_rng([seed, _SHORTCUT_STREAM])
    marked: set[int] = set()
    for split in SPLITS:
        for label, p in enumerate(marker_rates(split, rate, confounding)):
            group = [s.index for s in specs if s.split == split and s.label == label]
            order = rng.permutation(len(group))
            marked.update(group[k] for k in order[:round(p * len(group))])
    return [replace(s, marker=s.index in marked) for s in specs]


def png_bytes(array: np.ndarray) -> bytes:
    """PNG with fixed settings and no metadata, so equal pixels give equal bytes."""
    buffer = io.BytesIO()
    Image.fromarray(array, mode="L").save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _render_and_write(job: tuple[Path, int, int, Realism, ImageSpec]) -> manifest.Row:
    root, size, seed, realism, spec = job
    label = CLASSES[spec.label]
    r = render(size, seed, spec.index, spec.patient, spec.label == PNEUMONIA, realism=realism,
               marker=spec.marker)
    image = png_bytes(r.image)
    row = {
        "file": manifest.image_path(spec.split, label, spec.stem),
        "label": label, "split": spec.split, "patient_id": spec.patient_id,
        "sha256": hashlib.sha256(image).hexdigest(),
        "lesion_mask": manifest.lesion_mask_path(spec.split, label, spec.stem),
        "lung_mask": manifest.lung_mask_path(spec.split, label, spec.stem),
        "twin": manifest.twin_path(spec.split, label, spec.stem) if r.twin is not None else "",
    }
    _write(root / row["file"], image)
    _write(root / row["lesion_mask"], png_bytes(r.lesion_mask.astype(np.uint8) * 255))
    _write(root / row["lung_mask"], png_bytes(r.lung_mask.astype(np.uint8) * 255))
    if r.twin is not None:
        _write(root / row["twin"], png_bytes(r.twin))
    if r.shortcut_mask is not None and r.shortcut_twin is not None:
        row["shortcut"] = "1" if spec.marker else "0"
        row["shortcut_mask"] = manifest.shortcut_mask_path(spec.split, label, spec.stem)
        row["shortcut_twin"] = manifest.shortcut_twin_path(spec.split, label, spec.stem)
        _write(root / row["shortcut_mask"], png_bytes(r.shortcut_mask.astype(np.uint8) * 255))
        _write(root / row["shortcut_twin"], png_bytes(r.shortcut_twin))
    return row


def generate(out: Path, n: int, size: int, seed: int, pneumonia_fraction: float,
             split_fractions: Sequence[float], workers: int = 1, realism: Realism = "simple",
             shortcut_rate: float = 0.0, shortcut_confounding: float = 0.0
             ) -> list[manifest.Row]:
    """Render and write every image, mask and twin; returns the manifest rows."""
    if size < 16:
        raise UserError(f"--size must be at least 16 pixels, got {size}")
    if realism not in REALISM_LEVELS:
        raise UserError(f"--realism must be one of {REALISM_LEVELS}, got {realism!r}")
    specs = plan(n, seed, pneumonia_fraction, split_fractions, shortcut_rate,
                 shortcut_confounding)
    jobs = [(out, size, seed, realism, spec) for spec in specs]
    progress = dict(total=n, desc="phantom", unit="img", mininterval=1.0)
    if workers <= 1:
        return [_render_and_write(job) for job in tqdm(jobs, **progress)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        chunk = max(1, min(64, n // (workers * 8)))
        return list(tqdm(pool.map(_render_and_write, jobs, chunksize=chunk), **progress))
