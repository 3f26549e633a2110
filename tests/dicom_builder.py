"""DICOM test files built with pydicom at run time: radiographs of known pixels, any photometric
interpretation, bit depth, LUT and transfer syntax, and headers full of fake identifiers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    BasicTextSRStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    generate_uid,
)

# Attributes of the DICOM PS3.15 Basic Application Level Confidentiality Profile (Table E.1-1)
# that hold text, each given a distinctive fake value by `identifying_header`.
PS315_TEXT_ATTRIBUTES = (
    "AccessionNumber", "AcquisitionDate", "AcquisitionDateTime", "AcquisitionTime",
    "AdditionalPatientHistory", "AdmissionID", "AdmittingDate", "AdmittingDiagnosesDescription",
    "AdmittingTime", "Allergies", "CassetteID", "ContentDate", "ContentTime",
    "CountryOfResidence", "CurrentPatientLocation", "DerivationDescription", "DetectorID",
    "DeviceSerialNumber", "EthnicGroup", "FrameOfReferenceUID", "GantryID", "ImageComments",
    "InstanceCreationDate", "InstanceCreationTime", "InstanceCreatorUID", "InstitutionAddress",
    "InstitutionName", "InstitutionalDepartmentName", "IssuerOfPatientID", "MedicalAlerts",
    "MilitaryRank", "NameOfPhysiciansReadingStudy", "Occupation", "OperatorsName",
    "OtherPatientNames", "PatientAddress", "PatientBirthDate", "PatientBirthName",
    "PatientBirthTime", "PatientComments", "PatientID", "PatientMotherBirthName", "PatientName",
    "PatientReligiousPreference", "PatientState", "PatientTelephoneNumbers",
    "PerformedProcedureStepDescription", "PerformedProcedureStepID",
    "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
    "PerformingPhysicianName", "PhysiciansOfRecord", "PlateID", "ProtocolName",
    "ReasonForTheRequestedProcedure", "ReferringPhysicianAddress", "ReferringPhysicianName",
    "ReferringPhysicianTelephoneNumbers", "RequestedProcedureDescription", "RequestedProcedureID",
    "RequestingPhysician", "RequestingService", "ResponsibleOrganization", "ResponsiblePerson",
    "ScheduledPerformingPhysicianName", "ScheduledProcedureStepDescription",
    "ScheduledProcedureStepID", "SeriesDate", "SeriesDescription", "SeriesInstanceUID",
    "SeriesTime", "SOPInstanceUID", "StationName", "StudyDate", "StudyDescription", "StudyID",
    "StudyInstanceUID", "StudyTime", "TextString",
)
def identifying_header(n: int) -> dict[str, str]:
    """Fake but realistic values for every PS3.15 text attribute, unique to patient `n`."""
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    values = {}
    for k, keyword in enumerate(PS315_TEXT_ATTRIBUTES):
        vr = dictionary_VR(tag_for_keyword(keyword))
        if vr == "DA":
            value = f"19{30 + n % 60:02d}{1 + k % 12:02d}{10 + k % 18:02d}"
        elif vr == "TM":
            value = f"{k % 24:02d}{17 + n % 40:02d}{23 + k % 30:02d}.{n:03d}{k:03d}"
        elif vr == "DT":
            value = f"1951{1 + n % 12:02d}1407{k:02d}33.{n:06d}"
        elif vr == "UI":
            value = f"1.2.826.0.1.3680043.8.498.{9000 + n}.{k}.{7777 + k * 31}"
        elif vr == "PN":
            value = f"Fakename{n}^Given{k}x^Middle"
        elif vr == "SH":
            value = f"FAK{n:03d}X{k:03d}QZ"
        else:  # LO, LT, ST
            value = f"Fake {keyword} of patient {n} ({k})"
        values[keyword] = value
    return values


def needles(header: dict[str, str]) -> list[str]:
    """The identifier strings an output must never contain (long enough to be unambiguous)."""
    return [v for v in header.values() if len(v) >= 6]


def ramp(rows: int = 48, cols: int = 40, top: int = 4095) -> np.ndarray:
    """Stored values 0..top rising left to right (air left, bone right), with row texture."""
    x = np.linspace(0, top, cols)
    wiggle = (np.arange(rows)[:, None] % 3) * (top // 400 or 1)
    return np.clip(np.round(x[None, :] + wiggle), 0, top).astype(np.uint16)


def radiograph(pixels: np.ndarray, *, photometric: str = "MONOCHROME2", bits_stored: int = 12,
               rescale: tuple[float, float] | None = None,
               window: tuple[float, float] | None = None,
               voi_lut: np.ndarray | None = None, view: str | None = "PA",
               body_part: str | None = "CHEST", burned_in: str | None = None,
               header: dict[str, str] | None = None, frames: int = 1) -> Dataset:
    """A DX radiograph dataset with little-endian uncompressed pixel data."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.Modality = "DX"
    ds.SOPInstanceUID = generate_uid()
    for keyword, value in (header or {}).items():
        setattr(ds, keyword, value)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if view is not None:
        ds.ViewPosition = view
    if body_part is not None:
        ds.BodyPartExamined = body_part
    if burned_in is not None:
        ds.BurnedInAnnotation = burned_in
    stack = np.stack([pixels] * frames) if frames > 1 else pixels
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16 if bits_stored > 8 else 8
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_lut is not None:
        item = Dataset()
        item.add_new("LUTDescriptor", "US", [len(voi_lut), 0, 16])
        item.add_new("LUTData", "US", [int(v) for v in voi_lut])
        ds.VOILUTSequence = Sequence([item])
    dtype = np.uint16 if ds.BitsAllocated == 16 else np.uint8
    ds.PixelData = np.ascontiguousarray(stack, dtype=dtype).tobytes()
    return ds


def structured_report(header: dict[str, str] | None = None) -> Dataset:
    """A DICOM object without pixel data (a text report), as folders of studies hold."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = BasicTextSRStorage
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = BasicTextSRStorage
    ds.Modality = "SR"
    ds.SOPInstanceUID = generate_uid()
    for keyword, value in (header or {}).items():
        setattr(ds, keyword, value)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def save(ds: Dataset, path: Path) -> Path:
    """Written as a DICOM file with the 128-byte preamble and `DICM` marker."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
