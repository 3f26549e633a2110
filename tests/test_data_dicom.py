"""DICOM in the one decoder: modality LUT, VOI LUT or window, MONOCHROME1, bit depths,
compressed syntaxes, detection without an extension, and rejection with reasons."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from dicom_builder import radiograph, ramp, save, structured_report
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import JPEG2000Lossless, RLELossless

from cfxray.data.images import ImageRejected, decode_gray


def _decode(ds, tmp_path: Path, name: str = "image.dcm") -> tuple[np.ndarray, dict]:
    return decode_gray(save(ds, tmp_path / name))


@pytest.mark.parametrize("bits", [12, 16])
def test_monochrome2_keeps_air_dark_and_records_bit_depth(bits: int, tmp_path: Path) -> None:
    pixels = ramp(top=2 ** bits - 1)
    gray, info = _decode(radiograph(pixels, bits_stored=bits), tmp_path)
    assert gray.dtype == np.uint8 and gray.shape == pixels.shape
    assert gray[:, 0].max() <= 2 and gray[:, -1].min() >= 253  # air (low values) dark
    assert (np.diff(gray[0].astype(int)) >= 0).all()
    assert info["format"] == "DICOM" and info["mode"] == "MONOCHROME2"
    assert info["bits_stored"] == bits
    assert info["transforms"] == "8 bits from the image's own range"


def test_monochrome1_is_inverted_so_air_stays_dark(tmp_path: Path) -> None:
    pixels = ramp()
    normal, _ = _decode(radiograph(pixels, photometric="MONOCHROME2"), tmp_path, "m2.dcm")
    # MONOCHROME1 stores air bright: the same anatomy is stored as top - value.
    inverted, info = _decode(radiograph(4095 - pixels, photometric="MONOCHROME1"), tmp_path,
                             "m1.dcm")
    assert inverted[:, 0].max() <= 2 and inverted[:, -1].min() >= 253
    assert np.abs(inverted.astype(int) - normal.astype(int)).max() <= 1
    assert info["transforms"].endswith("inverted (MONOCHROME1)")


def test_rescale_then_window_maps_the_window_to_0_255(tmp_path: Path) -> None:
    pixels = ramp(cols=64)  # stored 0..4095
    slope, intercept, centre, width = 2.0, -1000.0, 1000.0, 2000.0
    gray, info = _decode(radiograph(pixels, bits_stored=16, rescale=(slope, intercept),
                                    window=(centre, width)), tmp_path)
    value = pixels[0].astype(float) * slope + intercept  # after the modality LUT
    below, above = value <= centre - width / 2, value >= centre + width / 2
    assert below.any() and above.any() and (~below & ~above).any()
    assert (gray[0][below] == 0).all() and (gray[0][above] == 255).all()
    inside = ~below & ~above
    expected = (value[inside] - (centre - width / 2)) / width * 255
    assert np.abs(gray[0][inside] - expected).max() <= 2
    assert info["transforms"] == ("modality LUT (rescale slope 2, intercept -1000); "
                                  "window (centre 1000, width 2000, LINEAR)")


def test_voi_lut_sequence_is_preferred_to_the_window(tmp_path: Path) -> None:
    pixels = ramp()
    lut = np.round((np.arange(4096) / 4095) ** 2 * 4095).astype(int)  # a gamma-like curve
    gray, info = _decode(radiograph(pixels, voi_lut=lut, window=(100, 50)), tmp_path)
    expected = lut[pixels[0]] / 4095 * 255
    assert np.abs(gray[0].astype(float) - expected).max() <= 1
    middle = int(np.argmin(np.abs(pixels[0].astype(int) - 2048)))
    assert gray[0, middle] < 80  # a straight window or min-max would put it near 128
    assert info["transforms"] == "VOI LUT (VOI LUT Sequence item 1)"


@pytest.mark.parametrize("syntax", [JPEG2000Lossless, RLELossless], ids=["j2k", "rle"])
def test_compressed_syntaxes_decode_to_the_uncompressed_pixels(syntax, tmp_path: Path) -> None:
    pixels = ramp()
    plain, _ = _decode(radiograph(pixels), tmp_path, "plain.dcm")
    ds = radiograph(pixels)
    ds.compress(syntax)
    packed, info = _decode(ds, tmp_path, "packed.dcm")
    assert info["transfer_syntax"] == syntax.name
    assert np.array_equal(packed, plain)


def test_jpeg_ls_lossless_from_pydicom_test_files_matches_the_uncompressed_one() -> None:
    # Small files that ship inside the pydicom wheel: nothing is downloaded.
    plain, _ = decode_gray(get_testdata_file("MR_small.dcm"))
    packed, info = decode_gray(get_testdata_file("MR_small_jpeg_ls_lossless.dcm"))
    assert info["transfer_syntax"] == "JPEG-LS Lossless Image Compression"
    assert np.array_equal(packed, plain)


def test_dicom_is_found_by_its_marker_without_an_extension_and_as_bytes(tmp_path: Path) -> None:
    path = save(radiograph(ramp()), tmp_path / "IM0001")
    gray, info = decode_gray(path)
    assert info["format"] == "DICOM"
    from_bytes, _ = decode_gray(path.read_bytes())
    assert np.array_equal(gray, from_bytes)
    png = io.BytesIO()
    Image.fromarray(gray).save(png, format="PNG")
    assert np.array_equal(decode_gray(png.getvalue())[0], gray)


def test_multi_frame_and_non_image_objects_are_rejected_with_reasons(tmp_path: Path) -> None:
    with pytest.raises(ImageRejected, match=r"multi-frame object \(3 frames\)"):
        _decode(radiograph(ramp(), frames=3), tmp_path, "cine.dcm")
    with pytest.raises(ImageRejected, match=r"not an image: .*without pixel data.*Basic Text SR"):
        _decode(structured_report(), tmp_path, "report.dcm")


def test_corrupt_dicom_is_rejected_never_raised(tmp_path: Path) -> None:
    good = save(radiograph(ramp()), tmp_path / "good.dcm").read_bytes()
    (tmp_path / "truncated.dcm").write_bytes(good[: len(good) - 500])
    (tmp_path / "garbage.dcm").write_bytes(b"not a dicom file at all" * 20)
    (tmp_path / "marker_only").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 40)
    for name in ("truncated.dcm", "garbage.dcm", "marker_only"):
        with pytest.raises(ImageRejected, match="corrupt DICOM"):
            decode_gray(tmp_path / name)


def test_a_decoder_error_quoting_a_header_value_is_scrubbed(tmp_path: Path) -> None:
    ds = radiograph(ramp(), window=(1000, 400), header={"PatientName": "Smithfake^Jo"})
    with pytest.warns(UserWarning, match="Invalid value for VR CS"):
        ds.VOILUTFunction = "SMITHFAKE^JO"  # pydicom quotes an unknown function in its error
    with pytest.raises(ImageRejected) as caught:
        _decode(ds, tmp_path)
    assert "corrupt DICOM" in str(caught.value)
    assert "SMITHFAKE" not in str(caught.value).upper()
