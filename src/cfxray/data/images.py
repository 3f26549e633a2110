"""Decode any image file to 8-bit grayscale, or say precisely why it cannot be used.

Real X-ray collections mix DICOM, JPEG and PNG, 8- to 16-bit, RGB screenshots, rotated phone
pictures and the odd truncated download. Ingest must never crash on one bad file nor copy it
silently, so every failure here becomes an `ImageRejected` with a reason for the quarantine
report. DICOM (a `.dcm`/`.dicom` name or the `DICM` marker) goes through `cfxray.data.dicom`;
everything else through Pillow.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

# Modes converted with Pillow's luminance formula (alpha, if any, is dropped).
_COLOUR_MODES = {"RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "P", "PA", "LA", "1", "L"}
# Integer and float modes of more than 8 bits, rescaled from their own value range.
_WIDE_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
DICOM_SUFFIXES = (".dcm", ".dicom")
DICOM_PREAMBLE, DICOM_MAGIC = 128, b"DICM"


class ImageRejected(Exception):
    """A file that is not a usable image; the message is the quarantine reason."""


def is_dicom(head: bytes, name: str = "") -> bool:
    """A `.dcm`/`.dicom` name, or the `DICM` marker after the 128-byte preamble."""
    return (Path(name).suffix.lower() in DICOM_SUFFIXES
            or head[DICOM_PREAMBLE:DICOM_PREAMBLE + 4] == DICOM_MAGIC)


def path_is_dicom(path: Path) -> bool:
    with path.open("rb") as f:
        return is_dicom(f.read(DICOM_PREAMBLE + 4), path.name)


def decode_gray(source: str | Path | bytes) -> tuple[np.ndarray, dict[str, str | int]]:
    """Pixels as uint8 [H, W] (EXIF orientation applied, DICOM displayed as the standard says)
    and facts about the original, including the transforms applied (`transforms`)."""
    data = source if isinstance(source, bytes) else None
    path = Path(source) if data is None else None
    if (len(data) if data is not None else path.stat().st_size) == 0:
        raise ImageRejected("empty file (0 bytes)")
    if is_dicom(data) if data is not None else path_is_dicom(path):
        from cfxray.data.dicom import read_dicom  # pydicom only for callers that meet DICOM

        image = read_dicom(data if data is not None else path.read_bytes())
        return image.gray, image.info
    return _decode_pillow(io.BytesIO(data) if data is not None else path)


def _decode_pillow(source: Path | io.BytesIO) -> tuple[np.ndarray, dict[str, str | int]]:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(source) as probe:
                probe.verify()  # catches truncated PNGs and corrupt chunks cheaply
            if isinstance(source, io.BytesIO):
                source.seek(0)
            with Image.open(source) as img:
                img.load()
                info: dict[str, str | int] = {"format": img.format or "?", "mode": img.mode,
                                              "width": img.width, "height": img.height}
                info["transforms"] = "; ".join(_pillow_steps(img))
                gray = to_gray8(ImageOps.exif_transpose(img))
        except UnidentifiedImageError:
            raise ImageRejected("not an image (format not recognised)") from None
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise ImageRejected(f"too large to decode safely: {exc}") from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageRejected(f"corrupt or truncated image: {exc}") from None
    if gray.size == 0:
        raise ImageRejected("image has zero width or height")
    return gray, info


def _pillow_steps(img: Image.Image) -> list[str]:
    turned = img.getexif().get(ExifTags.Base.Orientation, 1) in range(2, 9)
    steps = ["EXIF orientation"] if turned else []
    if img.mode in _WIDE_MODES:
        steps.append("8 bits from the image's own range")
    elif img.mode != "L":
        steps.append(f"{img.mode} to luminance")
    return steps


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
