"""DICOM radiographs to the pipeline's 8-bit grey, in the order the standard displays them.

A DICOM's stored values are not what a radiologist sees: the modality LUT (or rescale) turns
them into physical values, the VOI LUT (or window) picks the displayed range, and
`MONOCHROME1` images are stored inverted (air bright). Skipping any step hands the classifier a
different image from the one read clinically, so all of them are applied here with pydicom's
own functions and each one applied is recorded.

Only an allow-list of header facts leaves this module (`DicomImage.info`: geometry, bit depth,
photometric interpretation, transfer syntax, view, body part, burned-in annotation and the
transforms); the three identifiers ingest needs for patient-aware splits and names stay in
`DicomImage.identifiers` for the caller to pseudonymise. Headers hold names, dates and IDs, so
pydicom's warnings and log records (which can quote element values) are silenced, and error
messages are scrubbed of the file's own text values before they become a quarantine reason.
"""

from __future__ import annotations

import io
import logging
import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from cfxray.data.images import DICOM_MAGIC, DICOM_PREAMBLE, ImageRejected

# Values of coded-string (CS) elements are shown in reasons only when they look like codes.
_CODE = re.compile(r"^[A-Z0-9 _]{1,16}$")
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
_COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT")
# Value representations whose values can be text that identifies someone (scrubbed from
# error messages); numbers and binary data are left alone.
_TEXT_VRS = {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR",
             "UT"}

logging.getLogger("pydicom").addHandler(logging.NullHandler())
logging.getLogger("pydicom").propagate = False


@dataclass(frozen=True)
class DicomImage:
    gray: np.ndarray  # uint8 [H, W], air dark
    info: dict[str, str | int]  # allow-listed, safe to write anywhere
    identifiers: dict[str, str] = field(repr=False)  # PatientID, StudyInstanceUID, SOPInstanceUID


def code(value: object) -> str:
    """A coded-string header value as it may appear in a reason, or '?' when it is not a code."""
    text = str(value or "").strip().upper()
    return text if _CODE.match(text) else ("?" if text else "")


def read_dicom(data: bytes) -> DicomImage:
    """Decode one DICOM file's bytes, or raise `ImageRejected` saying why it is unusable."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = _parse(data)
        try:
            _check_is_single_image(ds)
            return _render(ds)
        except ImageRejected:
            raise
        except Exception as exc:  # a decoder failing on a corrupt file is a reason, not a crash
            message = _scrub(f"{type(exc).__name__}: {exc}", ds)
            short = message if len(message) <= 160 else message[:157].rsplit(" ", 1)[0] + " ..."
            raise ImageRejected(f"corrupt DICOM: {short}") from None


def _parse(data: bytes) -> Dataset:
    has_magic = data[DICOM_PREAMBLE:DICOM_PREAMBLE + 4] == DICOM_MAGIC
    try:
        # Files named .dcm without the preamble (raw datasets) are read with force=True.
        ds = pydicom.dcmread(io.BytesIO(data), force=not has_magic)
    except Exception as exc:  # see read_dicom; header text is not echoed
        raise ImageRejected(f"corrupt DICOM: header cannot be read ({type(exc).__name__})") \
            from None
    if not has_magic and not any(k in ds for k in ("SOPClassUID", *_PIXEL_KEYWORDS)):
        raise ImageRejected("corrupt DICOM: no 'DICM' marker and no image header")
    return ds


def _check_is_single_image(ds: Dataset) -> None:
    if not any(k in ds for k in _PIXEL_KEYWORDS):
        sop = ds.get("SOPClassUID")
        if "Rows" in ds or sop is None:  # an image header without its pixels, or no header
            raise ImageRejected("corrupt DICOM: no pixel data where an image was expected")
        raise ImageRejected(f"not an image: DICOM object without pixel data ({sop.name})")
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames > 1:
        raise ImageRejected(f"multi-frame object ({frames} frames)")
    pixels = int(ds.get("Rows") or 0) * int(ds.get("Columns") or 0)
    if pixels == 0:
        raise ImageRejected("image has zero width or height")
    if Image.MAX_IMAGE_PIXELS and pixels > Image.MAX_IMAGE_PIXELS:
        raise ImageRejected(f"too large to decode safely: {pixels} pixels")
    photometric = str(ds.get("PhotometricInterpretation") or "")
    if photometric not in (*_MONOCHROME, *_COLOUR) or (
            photometric in _COLOUR and int(ds.get("BitsAllocated") or 0) != 8):
        bits = f", {ds.get('BitsAllocated')} bits" if photometric in _COLOUR else ""
        raise ImageRejected(f"unsupported DICOM PhotometricInterpretation "
                            f"{code(photometric) or '(missing)'}{bits}")


def _render(ds: Dataset) -> DicomImage:
    """Modality LUT, VOI LUT or window, 8 bits, MONOCHROME1 inverted; each step recorded."""
    photometric = str(ds.PhotometricInterpretation)
    stored = ds.pixel_array
    steps: list[str] = []
    if photometric in _COLOUR:
        rgb = Image.fromarray(np.ascontiguousarray(stored, dtype=np.uint8), mode="RGB")
        gray = np.asarray(rgb.convert("L"), dtype=np.uint8)
        steps.append(f"{photometric} to luminance")
    else:
        values = apply_modality_lut(stored, ds)
        steps += _modality_step(ds)
        voi = _voi_step(ds)
        if voi:
            values = apply_voi_lut(values, ds, index=0)
            lo, hi = _voi_output_range(ds)
            steps.append(voi)
        elif not steps and int(ds.BitsStored) <= 8 and int(ds.PixelRepresentation) == 0:
            lo, hi = 0.0, 255.0
            steps.append("8 bits as stored")
        else:
            lo, hi = float(np.min(values)), float(np.max(values))
            steps.append("8 bits from the image's own range")
        gray = _to_uint8(values, lo, hi)
        if photometric == "MONOCHROME1":
            gray = 255 - gray
            steps.append("inverted (MONOCHROME1)")
    if gray.ndim != 2:
        raise ImageRejected(f"unexpected DICOM pixel array shape {gray.shape}")
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    info: dict[str, str | int] = {
        "format": "DICOM", "mode": photometric,
        "width": int(ds.Columns), "height": int(ds.Rows),
        "bits_stored": int(ds.get("BitsStored") or 0),
        "transfer_syntax": syntax.name if syntax is not None else "?",
        "transforms": "; ".join(steps),
        "view_position": code(ds.get("ViewPosition")),
        "body_part": code(ds.get("BodyPartExamined")),
        "burned_in_annotation": code(ds.get("BurnedInAnnotation")),
    }
    identifiers = {key: str(ds.get(key) or "").strip()
                   for key in ("PatientID", "StudyInstanceUID", "SOPInstanceUID")}
    return DicomImage(gray, info, identifiers)


def _modality_step(ds: Dataset) -> list[str]:
    if ds.get("ModalityLUTSequence"):
        return ["modality LUT (Modality LUT Sequence)"]
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        if (slope, intercept) != (1.0, 0.0):
            return [f"modality LUT (rescale slope {slope:g}, intercept {intercept:g})"]
    return []


def _voi_step(ds: Dataset) -> str:
    """What `apply_voi_lut(prefer_lut=True)` will apply: the VOI LUT, the window, or nothing."""
    lut = ds.get("VOILUTSequence")
    if lut and None not in (lut[0].get("LUTDescriptor"), lut[0].get("LUTData")):
        return "VOI LUT (VOI LUT Sequence item 1)"
    if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        centre, width = (_first(ds.WindowCenter), _first(ds.WindowWidth))
        function = str(ds.get("VOILUTFunction") or "LINEAR")
        return f"window (centre {centre:g}, width {width:g}, {code(function)})"
    return ""


def _first(value: object) -> float:
    return float(value[0] if isinstance(value, list | MultiValue) else value)


def _voi_output_range(ds: Dataset) -> tuple[float, float]:
    """The VOI output's full range, found by passing inputs beyond the window (or every LUT
    entry) through the same pydicom function, so the window maps exactly to 0..255."""
    lut = ds.get("VOILUTSequence")
    if lut and None not in (lut[0].get("LUTDescriptor"), lut[0].get("LUTData")):
        entries, first = int(lut[0].LUTDescriptor[0]) or 2 ** 16, int(lut[0].LUTDescriptor[1])
        out = apply_voi_lut(np.arange(first, first + entries, dtype=np.int64), ds, index=0)
    else:
        with np.errstate(over="ignore"):
            out = apply_voi_lut(np.array([-np.inf, np.inf]), ds, index=0)
    return float(np.min(out)), float(np.max(out))


def _to_uint8(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (np.asarray(values, dtype=np.float64) - lo) * (255.0 / (hi - lo))
    return np.round(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)


def _scrub(message: str, ds: Dataset) -> str:
    """The message with every text value of the file's header replaced by '...'."""
    try:
        elements = list(ds.iterall())
    except Exception:  # a header too broken to walk: keep no message at all
        return "details withheld (header unreadable)"
    for elem in elements:
        if elem.VR not in _TEXT_VRS or elem.value is None:
            continue
        values = elem.value if isinstance(elem.value, MultiValue) else [elem.value]
        for value in values:
            text = str(value).strip()
            if len(text) >= 3:
                message = message.replace(text, "...")
    return message
