"""Write a phantom dataset: plan labels, patients and splits, render in parallel, record it all.

The plan comes from one seeded stream and every image from its own (seed, index) stream, so
the files are byte-identical whatever the number of worker processes.
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from cfxray.conventions import CLASSES, PNEUMONIA
from cfxray.data import manifest
from cfxray.data.phantom import render
from cfxray.data.splits import assign_splits
from cfxray.errors import UserError

_PLAN_STREAM = 0
MAX_IMAGES_PER_PATIENT = 3


@dataclass(frozen=True)
class ImageSpec:
    index: int
    label: int
    patient: int
    split: str

    @property
    def stem(self) -> str:
        return f"phantom_p{self.patient:05d}_{self.index:06d}"

    @property
    def patient_id(self) -> str:
        return f"phantom-{self.patient:05d}"


def plan(n: int, seed: int, pneumonia_fraction: float,
         split_fractions: Sequence[float]) -> list[ImageSpec]:
    """Labels, patients (1-3 images each, sharing anatomy) and patient-aware splits."""
    if n < 1:
        raise UserError(f"--n must be at least 1, got {n}")
    if not 0.0 <= pneumonia_fraction <= 1.0:
        raise UserError(f"--pneumonia-fraction must lie in [0, 1], got {pneumonia_fraction}")
    rng = np.random.default_rng([seed, _PLAN_STREAM])
    n_pneumonia = round(n * pneumonia_fraction)
    labels = rng.permutation(np.array([PNEUMONIA] * n_pneumonia + [0] * (n - n_pneumonia)))
    patients: list[int] = []
    while len(patients) < n:
        count = int(rng.integers(1, MAX_IMAGES_PER_PATIENT + 1))
        patients.extend([patients[-1] + 1 if patients else 0] * count)
    patients = patients[:n]
    split_of = assign_splits(Counter(patients), split_fractions, rng)
    return [ImageSpec(i, int(labels[i]), patients[i], split_of[patients[i]]) for i in range(n)]


def png_bytes(array: np.ndarray) -> bytes:
    """PNG with fixed settings and no metadata, so equal pixels give equal bytes."""
    buffer = io.BytesIO()
    Image.fromarray(array, mode="L").save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _render_and_write(job: tuple[Path, int, int, ImageSpec]) -> manifest.Row:
    root, size, seed, spec = job
    label = CLASSES[spec.label]
    r = render(size, seed, spec.index, spec.patient, spec.label == PNEUMONIA)
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
    return row


def generate(out: Path, n: int, size: int, seed: int, pneumonia_fraction: float,
             split_fractions: Sequence[float], workers: int = 1) -> list[manifest.Row]:
    """Render and write every image, mask and twin; returns the manifest rows."""
    if size < 16:
        raise UserError(f"--size must be at least 16 pixels, got {size}")
    specs = plan(n, seed, pneumonia_fraction, split_fractions)
    jobs = [(out, size, seed, spec) for spec in specs]
    progress = dict(total=n, desc="phantom", unit="img", mininterval=1.0)
    if workers <= 1:
        return [_render_and_write(job) for job in tqdm(jobs, **progress)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        chunk = max(1, min(64, n // (workers * 8)))
        return list(tqdm(pool.map(_render_and_write, jobs, chunksize=chunk), **progress))
