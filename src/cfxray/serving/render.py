"""Pictures a person looks at: counterfactual PNG, difference heatmap over the original, blend.

The heatmap is signed: red where the counterfactual is brighter than the original, blue
where darker, transparent where nothing changed. Its colour scale is symmetric and set per
image by the largest change (never below 2/255, so compression-level noise stays faint).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from cfxray.serving.client import Explanation

DISPLAY_SIZE = 256  # heatmaps are drawn at least this large; 64 px is hard to read
MIN_SCALE = 2.0 / 255.0


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[0, 1] float (or uint8) -> uint8."""
    if image.dtype == np.uint8:
        return image
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def _upscale(array: np.ndarray, size: int) -> np.ndarray:
    if array.shape[0] >= size:
        return array.astype(np.float32)
    image = Image.fromarray(array.astype(np.float32), mode="F")
    return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)


def heatmap_overlay(image: np.ndarray, difference: np.ndarray,
                    display_size: int = DISPLAY_SIZE) -> np.ndarray:
    """RGB uint8: the grayscale original with the signed difference coloured on top."""
    from matplotlib import colormaps

    base = _upscale(to_uint8(image).astype(np.float32) / 255.0, display_size)
    diff = _upscale(difference.astype(np.float32), display_size)
    scale = max(float(np.abs(difference).max()), MIN_SCALE)
    colours = colormaps["RdBu_r"](np.clip(diff / scale, -1, 1) * 0.5 + 0.5)[..., :3]
    alpha = np.clip(np.abs(diff) / scale, 0, 1)[..., None] * 0.85
    rgb = (1 - alpha) * base[..., None] + alpha * colours
    return np.round(rgb * 255).astype(np.uint8)


def blend(image: np.ndarray, counterfactual: np.ndarray, amount: float) -> np.ndarray:
    """uint8: `amount` 0 shows the original, 1 the counterfactual."""
    amount = float(np.clip(amount, 0.0, 1.0))
    mixed = (1 - amount) * to_uint8(image) / 255.0 + amount * np.clip(counterfactual, 0, 1)
    return to_uint8(mixed)


def write_explanation(result: Explanation, out_dir: str | Path, stem: str) -> dict[str, Path]:
    """`<stem>_input.png`, `<stem>_counterfactual.png`, `<stem>_heatmap.png`, `<stem>.json`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "input": out_dir / f"{stem}_input.png",
        "counterfactual": out_dir / f"{stem}_counterfactual.png",
        "heatmap": out_dir / f"{stem}_heatmap.png",
        "json": out_dir / f"{stem}.json",
    }
    Image.fromarray(result.image).save(paths["input"])
    Image.fromarray(to_uint8(result.counterfactual)).save(paths["counterfactual"])
    Image.fromarray(heatmap_overlay(result.image, result.difference)).save(paths["heatmap"])
    record = result.summary() | {"files": {k: p.name for k, p in paths.items() if k != "json"}}
    paths["json"].write_text(json.dumps(record, indent=2))
    return paths


def unique_stems(sources: list[str]) -> list[str]:
    """Output names from input file names; `a/x.png` and `b/x.png` become `x` and `x-2`."""
    seen: dict[str, int] = {}
    stems = []
    for source in sources:
        stem = Path(source).stem or "image"
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return stems
