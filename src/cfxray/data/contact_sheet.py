"""A contact sheet PNG so a person can see what a phantom dataset looks like.

Rows alternate NORMAL and PNEUMONIA examples; each PNEUMONIA tile is followed by its
lesion-free twin. Lung fields are outlined in green, lesions in red, the shortcut marker's
region (when the dataset has one) in cyan.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from cfxray.data.manifest import Row

LUNG_RGB = (40, 200, 80)
LESION_RGB = (230, 40, 40)
SHORTCUT_RGB = (0, 210, 230)
_TILE = 128
_COLUMNS = 4


def _gray(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("L").resize((_TILE, _TILE), Image.Resampling.BILINEAR))


def _mask(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("L").resize((_TILE, _TILE), Image.Resampling.NEAREST)) > 127


def _outline(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask)


def _tile(root: Path, image: str, row: Row, caption: str) -> Image.Image:
    rgb = np.repeat(_gray(root / image)[..., None], 3, axis=2)
    for key, colour in (("lung_mask", LUNG_RGB), ("lesion_mask", LESION_RGB),
                        ("shortcut_mask", SHORTCUT_RGB)):
        if row.get(key):
            rgb[_outline(_mask(root / row[key]))] = colour
    tile = Image.fromarray(rgb, mode="RGB")
    ImageDraw.Draw(tile).text((3, _TILE - 12), caption, fill=(255, 255, 0))
    return tile


def save_contact_sheet(root: Path, rows: Sequence[Row], out: Path, per_class: int = 8) -> Path:
    """The first `per_class` images of each class (by file name), masks outlined."""
    tiles: list[Image.Image] = []
    for label in ("NORMAL", "PNEUMONIA"):
        for row in sorted((r for r in rows if r["label"] == label), key=lambda r: r["file"])[:per_class]:
            tiles.append(_tile(root, row["file"], row, label))
            if row["twin"]:
                tiles.append(_tile(root, row["twin"], row, "twin"))
    n_rows = max(1, -(-len(tiles) // _COLUMNS))
    sheet = Image.new("RGB", (_COLUMNS * _TILE, n_rows * _TILE))
    for k, tile in enumerate(tiles):
        sheet.paste(tile, ((k % _COLUMNS) * _TILE, (k // _COLUMNS) * _TILE))
    sheet.save(out, format="PNG", compress_level=6)
    return out
