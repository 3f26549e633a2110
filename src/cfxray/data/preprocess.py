"""Turn a raw dataset (phantom or ingested) into the tensors training reads in one go.

Images are resized aspect-preserving, either padded (whole image kept, black borders) or
centre-cropped (fills the square, edges lost). Lesion masks are resized with the image's own
filter and kept wherever any lesion pixel contributes, so a twin still differs from its image
only inside the mask after resizing; lung masks are thresholded at one half. The shortcut
marker's region is kept the same way as a lesion mask, for the same reason (an image and its
marker-toggled twin differ only inside it).
"""

from __future__ import annotations

import json
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from cfxray.conventions import CLASSES, SPLITS
from cfxray.data import manifest
from cfxray.data.images import ImageRejected, decode_gray
from cfxray.data.settings import ResizeMode
from cfxray.data.tensors import SplitData, save_split
from cfxray.errors import UserError
from cfxray.lineage import sha256_tree

RESIZE_MODES: tuple[str, ...] = typing.get_args(ResizeMode)
META_NAME = "meta.json"
_FILTER = Image.Resampling.BILINEAR


def resize_square(array: np.ndarray, size: int, mode: str) -> np.ndarray:
    """float32 [size, size]: scale so the long (pad) or short (crop) side fits, then centre."""
    h, w = array.shape
    scale = size / (max(h, w) if mode == "pad" else min(h, w))
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    image = Image.fromarray(array.astype(np.float32), mode="F")
    resized = np.asarray(image.resize((new_w, new_h), _FILTER), dtype=np.float32)
    out = np.zeros((size, size), dtype=np.float32)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    src = resized[max(0, -top):max(0, -top) + size, max(0, -left):max(0, -left) + size]
    out[max(0, top):max(0, top) + src.shape[0], max(0, left):max(0, left) + src.shape[1]] = src
    return out


def _load(root: Path, rel: str) -> np.ndarray:
    try:
        return decode_gray(root / rel)[0]
    except FileNotFoundError:
        raise UserError(f"{root / rel} is listed in the manifest but missing") from None
    except ImageRejected as exc:
        raise UserError(f"{root / rel}: {exc}") from None


def _as_tensor(array: np.ndarray | None) -> torch.Tensor | None:
    return None if array is None else torch.from_numpy(array)


def _to_uint8(array: np.ndarray) -> np.ndarray:
    return np.round(np.clip(array, 0.0, 255.0)).astype(np.uint8)


def _shortcut_tensors(root: Path, rows: Sequence[manifest.Row], size: int, mode: str
                      ) -> dict[str, torch.Tensor]:
    """The shortcut marker's region, presence and toggled twins; empty when rows lack them."""
    if not rows or not all(r.get("shortcut_mask") and r.get("shortcut_twin") for r in rows):
        return {}
    regions = np.zeros((len(rows), size, size), dtype=bool)
    toggled = np.zeros((len(rows), size, size), dtype=np.uint8)
    for i, row in enumerate(rows):
        regions[i] = resize_square(_load(root, row["shortcut_mask"]), size, mode) > 0.0
        toggled[i] = _to_uint8(resize_square(_load(root, row["shortcut_twin"]), size, mode))
    return {"shortcut_masks": torch.from_numpy(regions),
            "has_shortcut": torch.tensor([r["shortcut"] == "1" for r in rows]),
            "shortcut_twins": torch.from_numpy(toggled)}


def build_split(root: Path, rows: Sequence[manifest.Row], size: int, mode: str) -> SplitData:
    has_masks = bool(rows) and all(r["lesion_mask"] and r["lung_mask"] for r in rows)
    images = np.zeros((len(rows), size, size), dtype=np.uint8)
    lesions = np.zeros((len(rows), size, size), dtype=bool) if has_masks else None
    lungs = np.zeros((len(rows), size, size), dtype=bool) if has_masks else None
    twins = np.zeros((len(rows), size, size), dtype=np.uint8) if has_masks else None
    has_twin = np.array([bool(r["twin"]) for r in rows], dtype=bool)
    for i, row in enumerate(tqdm(rows, desc="preprocess", unit="img", mininterval=1.0)):
        images[i] = _to_uint8(resize_square(_load(root, row["file"]), size, mode))
        if has_masks:
            lesions[i] = resize_square(_load(root, row["lesion_mask"]), size, mode) > 0.0
            lungs[i] = resize_square(_load(root, row["lung_mask"]), size, mode) >= 127.5
            if row["twin"]:
                twins[i] = _to_uint8(resize_square(_load(root, row["twin"]), size, mode))
    return SplitData(
        images=torch.from_numpy(images),
        labels=torch.tensor([CLASSES.index(r["label"]) for r in rows], dtype=torch.int64),
        files=[r["file"] for r in rows],
        patient_ids=[r["patient_id"] for r in rows],
        lesion_masks=_as_tensor(lesions), lung_masks=_as_tensor(lungs), twins=_as_tensor(twins),
        has_twin=torch.from_numpy(has_twin) if has_masks else None,
        **_shortcut_tensors(root, rows, size, mode),
    )


def preprocess(source: Path, out: Path, size: int, mode: str) -> dict[str, Any]:
    """Write `{split}.pt` for every split and `meta.json`; returns the meta record."""
    if mode not in RESIZE_MODES:
        raise UserError(f"--resize must be one of {RESIZE_MODES}, got {mode!r}")
    if size < 8:
        raise UserError(f"--size must be at least 8 pixels, got {size}")
    rows = manifest.read_manifest(source)
    source_hash = sha256_tree(source)
    counts: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        split_rows = sorted((r for r in rows if r["split"] == split), key=lambda r: r["file"])
        data = build_split(source, split_rows, size, mode)
        save_split(data, out, split)
        counts[split] = {c: int((data.labels == k).sum()) for k, c in enumerate(CLASSES)}
    meta = {
        "size": size, "resize": mode, "source_sha256": source_hash,
        "source": str(source), "counts": counts, "images": len(rows),
        "has_masks": all(r["lesion_mask"] for r in rows) and bool(rows),
        "twins": sum(bool(r["twin"]) for r in rows),
    }
    if any(r.get("shortcut_mask") for r in rows):
        meta["shortcut_markers"] = sum(r["shortcut"] == "1" for r in rows)
    (out / META_NAME).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta
