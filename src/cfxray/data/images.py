"""Decode any image file to 8-bit grayscale, or say precisely why it cannot be used.

Real X-ray collections mix JPEG and PNG, 8- and 16-bit, RGB screenshots, rotated phone
pictures and the odd truncated download. Ingest must never crash on one bad file nor copy it
silently, so every failure here becomes an `ImageRejected` with a reason for the quarantine
report.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Modes converted with Pillow's luminance formula (alpha, if any, is dropped).
_COLOUR_MODES = {"RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "P", "PA", "LA", "1", "L"}
# Integer and float modes of more than 8 bits, rescaled from their own value range.
_WIDE_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


class ImageRejected(Exception):
    """A file that is not a usable image; the message is the quarantine reason."""


def decode_gray(path: str | Path) -> tuple[np.ndarray, dict[str, str | int]]:
    """Pixels as uint8 [H, W] (EXIF orientation applied) and facts about the original."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise ImageRejected("empty file (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as probe:
                probe.verify()  # catches truncated PNGs and corrupt chunks cheaply
            with Image.open(path) as img:
                img.load()
                info = {"format": img.format or "?", "mode": img.mode,
                        "width": img.width, "height": img.height}
                img = ImageOps.exif_transpose(img)
                gray = to_gray8(img)
        except UnidentifiedImageError:
            raise ImageRejected("not an image (format not recognised)") from None
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise ImageRejected(f"too large to decode safely: {exc}") from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageRejected(f"corrupt or truncated image: {exc}") from None
    if gray.size == 0:
        raise ImageRejected("image has zero width or height")
    return gray, info


def to_gray8(img: Image.Image) -> np.ndarray:
    """8-bit grayscale: colour via luminance, wide modes rescaled from their min..max range."""
    if img.mode in _WIDE_MODES:
        values = np.asarray(img, dtype=np.float64)
        lo, hi = float(values.min()), float(values.max())
        if hi <= lo:
            return np.zeros(values.shape, dtype=np.uint8)
        return np.round((values - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    if img.mode in _COLOUR_MODES:
        return np.asarray(img.convert("L"), dtype=np.uint8)
    raise ImageRejected(f"unsupported image mode {img.mode!r}")
