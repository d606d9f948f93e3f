"""Writers for synthetic images: 8-bit PNG, NIfTI and DICOM marked as derived/synthetic, each written atomically.

All writers take one image ``(C, H, W)`` or ``(H, W)`` with intensities in [0, 1] (use :func:`to_unit_range` for
model outputs in [-1, 1]), write to a temporary file in the destination folder and ``os.replace`` it into place, so
an interrupted run never leaves a half-written image.

Orientation: PNG and DICOM store rows x columns as given; NIfTI stores the transpose (x = columns, y = rows), so that
MONAI's ``LoadImage`` returns the same array for the PNG and the NIfTI of one sample.
"""

from __future__ import annotations

import datetime
import gzip
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from monai.utils import StrEnum, optional_import

from monai_synth.data.ranges import to_unit_range
from monai_synth.utils.io import atomic_path

pydicom, has_pydicom = optional_import("pydicom")
nib, has_nib = optional_import("nibabel")
Image, has_pil = optional_import("PIL.Image")

__all__ = [
    "ImageFormat",
    "FORMAT_SUFFIX",
    "SECONDARY_CAPTURE_SOP_CLASS",
    "to_unit_range",
    "to_uint8",
    "write_png",
    "write_png_uint8",
    "write_nifti",
    "write_synthetic_dicom",
    "write_image",
]

logger = logging.getLogger(__name__)

SECONDARY_CAPTURE_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.7"
DEIDENTIFICATION_NOTE = "SYNTHETIC: diffusion model output (monai_synth), no patient data"


class ImageFormat(StrEnum):
    """Output formats of :func:`write_image`."""

    PNG = "png"
    NIFTI = "nifti"
    DICOM = "dicom"


FORMAT_SUFFIX = {ImageFormat.PNG: ".png", ImageFormat.NIFTI: ".nii.gz", ImageFormat.DICOM: ".dcm"}


def _check_format(fmt: str) -> ImageFormat:
    options = {m.value for m in ImageFormat}
    if str(fmt).lower() not in options:
        raise ValueError(f"`formats` entries must be in {sorted(options)}, got {fmt!r}.")
    return ImageFormat(str(fmt).lower())


def to_uint8(image01: np.ndarray) -> np.ndarray:
    """[0, 1] -> uint8 with rounding (``round(255 x)``)."""
    return np.round(np.clip(image01, 0.0, 1.0) * 255.0).astype(np.uint8)


def _as_2d(image01: np.ndarray, writer: str) -> np.ndarray:
    arr = np.asarray(image01)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"{writer} writes single-channel 2D images (1, H, W) or (H, W), got shape {arr.shape}.")
    return arr


def write_png(image01: np.ndarray, path: str | os.PathLike) -> Path:
    """8-bit grayscale PNG of a [0, 1] image, written atomically."""
    return write_png_uint8(to_uint8(_as_2d(image01, "write_png")), path)


def write_png_uint8(array: np.ndarray, path: str | os.PathLike, optimize: bool = False) -> Path:
    """PNG of a uint8 ``(H, W)`` (grayscale) or ``(H, W, 3)`` (RGB) array, written atomically.

    Raises:
        ValueError: another dtype or shape (names the shape).
    """
    if not has_pil:
        raise ImportError("write_png needs Pillow: pip install pillow.")
    arr = np.asarray(array)
    if arr.dtype != np.uint8 or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 3)):
        raise ValueError(f"write_png_uint8 takes uint8 (H, W) or (H, W, 3), got {arr.dtype} {arr.shape}.")
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(arr, mode="L" if arr.ndim == 2 else "RGB").save(tmp, format="PNG", optimize=optimize)
    return path


def write_nifti(image01: np.ndarray, path: str | os.PathLike) -> Path:
    """float32 NIfTI-1 in [0, 1] (identity affine; gzip when the name ends ``.gz``), written atomically."""
    if not has_nib:
        raise ImportError("write_nifti needs nibabel: pip install nibabel.")
    arr = _as_2d(image01, "write_nifti").astype(np.float32).T  # x = columns, y = rows
    img = nib.Nifti1Image(np.ascontiguousarray(arr), affine=np.eye(4))
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = b"SYNTHETIC monai_synth"
    data = img.to_bytes()
    path = Path(path)
    if path.name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def _synthetic_pixels(image01: np.ndarray, hu_window: tuple[float, float] | None) -> np.ndarray:
    """uint8 pixels, or int16 HU ``low + x (high - low)`` with ``hu_window`` (checked)."""
    if hu_window is None:
        return to_uint8(image01)
    lo, hi = (float(v) for v in hu_window)
    if not (np.isfinite(lo) and np.isfinite(hi) and -32768 <= lo < hi <= 32767):
        raise ValueError(f"`hu_window` must be (low, high) HU with low < high in the int16 range, got {hu_window}.")
    return np.round(lo + np.clip(np.asarray(image01, dtype=np.float64), 0.0, 1.0) * (hi - lo)).astype(np.int16)


def _set_image_pixels(ds: pydicom.Dataset, arr: np.ndarray, hu_window: tuple[float, float] | None) -> None:
    """The image pixel module of :func:`write_synthetic_dicom`: 8-bit unsigned, or signed 16-bit HU with the window."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = arr.shape
    if hu_window is None:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    else:
        lo, hi = hu_window
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "HU"
        ds.WindowCenter, ds.WindowWidth = (lo + hi) / 2.0, hi - lo
    ds.PixelData = arr.tobytes()


def write_synthetic_dicom(
    image01: np.ndarray,
    path: str | os.PathLike,
    study_uid: str,
    series_uid: str,
    label: int | None = None,
    class_name: str | None = None,
    instance_number: int = 1,
    modality: str = "OT",
    series_description: str = "SYNTHETIC diffusion samples",
    patient_id: str = "SYNTHETIC",
    uid_root: str | None = None,
    hu_window: tuple[float, float] | None = None,
) -> Path:
    """8-bit Secondary Capture DICOM (16-bit in HU with ``hu_window``), marked derived/synthetic, with no identifiers
    from any real study.

    Markers a PACS user sees: PatientName ``SYNTHETIC^<patient_id>``, ImageComments and SeriesDescription starting
    with ``SYNTHETIC``, ImageType ``DERIVED\\SECONDARY``, ConversionType ``SYN`` (synthetic image),
    PatientIdentityRemoved ``YES``, DeidentificationMethod (a synthetic note), BurnedInAnnotation ``NO``, and a fresh
    SOP Instance UID under ``uid_root`` (``pydicom.uid.generate_uid``). Study and Series UIDs and the pseudonymous
    ``patient_id`` are passed in, so that one generation run is one "patient" and one study with one series per
    class (:func:`monai_synth.engines.generate_dataset` draws them per run; a PACS never merges two runs).

    Args:
        image01: ``(1, H, W)`` or ``(H, W)`` in [0, 1].
        path: destination ``.dcm``.
        study_uid, series_uid: UIDs shared by the images of a run / class (new ones from ``generate_uid``).
        label: class index, stored in ImageComments.
        class_name: class name, stored in ImageComments.
        instance_number: InstanceNumber.
        modality: DICOM Modality (``"OT"`` other by default).
        series_description: SeriesDescription (``SYNTHETIC`` is prefixed when missing).
        patient_id: pseudonymous PatientID of the run (a random id, never a real patient's).
        uid_root: UID prefix for the SOP Instance UID (your organisation's root, ending with ``.``); default
            pydicom's.
        hu_window: ``(low, high)`` HU of the CT window the image was made in (e.g. lung ``(-1350, 150)``): the
            pixels become signed 16-bit Hounsfield units ``low + x (high - low)`` (RescaleSlope 1, RescaleIntercept
            0, RescaleType HU) with that window as WindowCenter/WindowWidth. Values outside the window were clipped
            when the image was made and cannot be recovered.

    Raises:
        ValueError: when ``hu_window`` is not two finite numbers with ``low < high`` inside the int16 range.
    """
    if not has_pydicom:
        raise ImportError("write_synthetic_dicom needs pydicom: pip install pydicom.")
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    arr = _synthetic_pixels(_as_2d(image01, "write_synthetic_dicom"), hu_window)
    sop_uid = generate_uid(prefix=uid_root) if uid_root else generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    now = datetime.datetime.now(datetime.timezone.utc)
    ds.SOPClassUID = SECONDARY_CAPTURE_SOP_CLASS
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.ConversionType = "SYN"
    ds.Modality = modality
    ds.PatientName = f"SYNTHETIC^{patient_id}" if patient_id != "SYNTHETIC" else "SYNTHETIC"
    ds.PatientID = str(patient_id)
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = DEIDENTIFICATION_NOTE
    ds.BurnedInAnnotation = "NO"
    ds.StudyID = "SYNTH"
    ds.StudyDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.SeriesNumber = 1 if label is None else int(label) + 1
    ds.InstanceNumber = int(instance_number)
    ds.SeriesDescription = series_description if series_description.upper().startswith("SYNTHETIC") else (
        f"SYNTHETIC {series_description}"
    )
    comment = "SYNTHETIC IMAGE, not a patient (monai_synth)"
    if label is not None:
        comment += f"; label={int(label)}"
    if class_name is not None:
        comment += f"; class={class_name}"
    ds.ImageComments = comment
    _set_image_pixels(ds, arr, hu_window)
    path = Path(path)
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return path


def write_image(
    image01: np.ndarray, path: str | os.PathLike, fmt: str | ImageFormat, dicom_kwargs: Mapping | None = None
) -> Path:
    """Dispatch to :func:`write_png`, :func:`write_nifti` or :func:`write_synthetic_dicom`."""
    fmt = _check_format(fmt)
    if fmt == ImageFormat.PNG:
        return write_png(image01, path)
    if fmt == ImageFormat.NIFTI:
        return write_nifti(image01, path)
    return write_synthetic_dicom(image01, path, **dict(dicom_kwargs or {}))
