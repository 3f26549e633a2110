"""The data steps' params.yaml sections (`phantom`, `ingest`, `preprocess`) as dataclasses.

Each field is a key of its section and, where the command offers one, a `--kebab-case` option;
the defaults equal the committed params.yaml (`cfxray.settings`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ResizeMode = Literal["pad", "crop"]  # pad: the whole image, black borders | crop: centre crop
# simple: smooth round opacities in flat lungs | hard: vessels, patchy, diffuse and bilateral
# disease, air bronchograms, exposure variation (docs/DATA_PHANTOM.md)
Realism = Literal["simple", "hard"]


@dataclass(frozen=True)
class PhantomSettings:
    out: str = "data/phantom"
    n: int = 1500
    size: int = 128
    seed: int = 0
    pneumonia_fraction: float = 0.5
    split_fractions: tuple[float, ...] = (0.7, 0.15, 0.15)  # train, val, test
    workers: int = 0  # processes, 0: all cores; the output is identical for any value
    contact_sheet: int = 16  # examples in contact_sheet.png (0: none)
    realism: Realism = "simple"
    shortcut_rate: float = 0.0  # share of images with the burnt-in "AP" shortcut marker
    # train/val: 0 marker independent of the label .. 1 only PNEUMONIA images carry it (as far
    # as the rate allows); test: always independent
    shortcut_confounding: float = 0.0


@dataclass(frozen=True)
class IngestSettings:
    out: str = "data/ingested"
    seed: int = 0
    split_fractions: tuple[float, ...] = (0.7, 0.15, 0.15)  # when the source has no splits
    workers: int = 0
    views: tuple[str, ...] = ("PA", "AP")  # DICOM ViewPosition kept (UNKNOWN: none given)
    body_parts: tuple[str, ...] = ("CHEST",)  # DICOM BodyPartExamined kept when present
    keep_burned_in: bool = False
    deid_salt_file: str = "~/.config/cfxray/deid-salt"  # outside the repository


@dataclass(frozen=True)
class PreprocessSettings:
    out: str = "data/prepared"
    size: int = 64
    resize: ResizeMode = "pad"
