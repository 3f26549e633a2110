"""Images from files or uploads, decoded and resized exactly as the training data was."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cfxray.data.images import ImageRejected, decode_gray
from cfxray.data.preprocess import RESIZE_MODES, resize_square
from cfxray.errors import UserError


def to_model_input(gray: np.ndarray, size: int, resize: str) -> np.ndarray:
    """uint8 [H, W] of any size -> uint8 [size, size], as `cfxray data preprocess` does."""
    if resize not in RESIZE_MODES:
        raise UserError(f"unknown resize mode {resize!r}; the server's models say "
                        f"one of {RESIZE_MODES}")
    if gray.shape == (size, size):
        return np.ascontiguousarray(gray, dtype=np.uint8)
    resized = resize_square(gray.astype(np.float32), size, resize)
    return np.round(np.clip(resized, 0.0, 255.0)).astype(np.uint8)


def read_image(path: str | Path, size: int, resize: str,
               max_bytes: int | None = None) -> np.ndarray:
    """Decode any image the ingest step accepts (EXIF, 16-bit, RGB) to the model's input."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    if max_bytes is not None and path.stat().st_size > max_bytes:
        raise UserError(f"{path.name}: {path.stat().st_size / 1e6:.1f} MB is over the "
                        f"{max_bytes / 1e6:.1f} MB upload limit")
    try:
        gray, _ = decode_gray(path)
    except ImageRejected as exc:
        raise UserError(f"{path.name}: {exc}") from None
    return to_model_input(gray, size, resize)
