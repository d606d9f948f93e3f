"""DICOM loading on top of MONAI's :class:`monai.data.PydicomReader`.

What MONAI 1.6.1's ``PydicomReader`` already does, and what :class:`ClinicalDicomReader` changes:

=============================  ======================================  =========================================
topic                          ``PydicomReader`` (MONAI 1.6.1)         ``ClinicalDicomReader``
=============================  ======================================  =========================================
rescale slope / intercept      always applied when a tag is present    stored values by default; ``rescale=True``
                               (float32), tags dropped from meta       applies it; tags always kept in meta
series order                   ``InstanceNumber``                      position along the slice normal
                                                                       (ImagePositionPatient . normal), then
                                                                       ``InstanceNumber``
mixed series / slice sizes     warning, then a confusing stack error   :class:`DicomReadError` naming the files
empty folder                   ``IndexError``                          :class:`DicomReadError` naming the folder
non-DICOM ``.dcm``, truncated  raw pydicom exception or a warning      :class:`DicomReadError` naming the file
inconsistent pixel header,     decoded as far as possible              :class:`DicomReadError` naming the file
RescaleSlope 0, > cap pixels                                           (``MAX_DECODED_PIXELS`` caps the size)
missing PixelData              ``ValueError`` ("no pixel_array")       :class:`DicomReadError` naming the file
MONOCHROME1                    not handled (bright = air)              inverted to MONOCHROME2 convention
missing decoder                pydicom ``RuntimeError``                :class:`DicomReadError` naming the package
multi-frame                    frames land on axis 1 after ``swap_ij`` frames moved to the last axis (like a series)
projection images (CR/DX/MG)   identity affine + warning               affine from (Imager)PixelSpacing
=============================  ======================================  =========================================

Errors that can escape :func:`load_dicom` / ``LoadImage(reader=ClinicalDicomReader())``: :class:`DicomReadError`
(a :class:`ValueError`) for anything wrong with the files, :class:`FileNotFoundError` for a path that does not exist.
"""

from __future__ import annotations

import glob
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.config import PathLike
from monai.data import MetaTensor, PydicomReader
from monai.data.utils import orientation_ras_lps
from monai.transforms import LoadImage
from monai.utils import ensure_tuple, optional_import

pydicom, has_pydicom = optional_import("pydicom")

__all__ = [
    "DicomReadError",
    "DeferredDicomError",
    "ClinicalDicomReader",
    "load_dicom",
    "DICOM_DECODER_PACKAGES",
    "DICOM_SUFFIXES",
    "is_dicom_file",
]

logger = logging.getLogger(__name__)

# Meta keys added by ClinicalDicomReader (documented in docs/data.md).
RESCALE_SLOPE = "RescaleSlope"
RESCALE_INTERCEPT = "RescaleIntercept"
RESCALE_APPLIED = "rescale_applied"
MONOCHROME1_INVERTED = "monochrome1_inverted"

# Transfer syntax UID -> what to install when pydicom has no working decoder for it.
DICOM_DECODER_PACKAGES: dict[str, str] = {
    "1.2.840.10008.1.2.4.90": "pylibjpeg pylibjpeg-openjpeg",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91": "pylibjpeg pylibjpeg-openjpeg",  # JPEG 2000
    "1.2.840.10008.1.2.4.201": "pylibjpeg pylibjpeg-openjpeg",  # HTJ2K lossless
    "1.2.840.10008.1.2.4.202": "pylibjpeg pylibjpeg-openjpeg",  # HTJ2K lossless RPCL
    "1.2.840.10008.1.2.4.203": "pylibjpeg pylibjpeg-openjpeg",  # HTJ2K
    "1.2.840.10008.1.2.5": "pylibjpeg pylibjpeg-rle",  # RLE lossless (pydicom's numpy decoder also works)
    "1.2.840.10008.1.2.4.50": "pylibjpeg pylibjpeg-libjpeg",  # JPEG baseline
    "1.2.840.10008.1.2.4.51": "pylibjpeg pylibjpeg-libjpeg",  # JPEG extended
    "1.2.840.10008.1.2.4.57": "pylibjpeg pylibjpeg-libjpeg",  # JPEG lossless
    "1.2.840.10008.1.2.4.70": "pylibjpeg pylibjpeg-libjpeg",  # JPEG lossless SV1
    "1.2.840.10008.1.2.4.80": "pylibjpeg pylibjpeg-libjpeg",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81": "pylibjpeg pylibjpeg-libjpeg",  # JPEG-LS near-lossless
}


class DicomReadError(ValueError):
    """A DICOM file or folder cannot be loaded; the message names the file(s) and what to do."""


def _dicom_error(filename: PathLike, what: str, exc: BaseException | None = None) -> DicomReadError:
    detail = f" ({type(exc).__name__}: {exc})" if exc is not None else ""
    return DicomReadError(f"DICOM file {str(filename)!r}: {what}{detail}")


def _read_dataset(filename: PathLike, **kwargs: Any):
    """``pydicom.dcmread`` with every failure turned into :class:`DicomReadError` naming the file."""
    if not os.path.exists(filename):
        raise FileNotFoundError(f"DICOM path {str(filename)!r} does not exist.")
    try:
        return pydicom.dcmread(fp=str(filename), **kwargs)
    except Exception as e:  # pydicom raises InvalidDicomError, EOFError, struct.error, ... on bad files
        raise _dicom_error(
            filename,
            "is not a readable DICOM file (not DICOM, corrupt or truncated; needs a 128-byte preamble + 'DICM')",
            e,
        ) from e


def _missing_decoder_hint(ds) -> str | None:
    """Name the package to install if pydicom has no available decoder for the dataset's transfer syntax."""
    meta = getattr(ds, "file_meta", None)
    uid = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    if uid is None or not getattr(uid, "is_compressed", False):
        return None
    try:
        decoder = pydicom.pixels.get_decoder(uid)
        available = decoder.is_available
    except NotImplementedError:
        available = False
    if available:
        return None
    pkg = DICOM_DECODER_PACKAGES.get(str(uid), "pylibjpeg with the matching plugin, or python-gdcm")
    return f"no pixel decoder is installed for transfer syntax {uid.name} ({uid}); run `pip install {pkg}`"


MAX_DECODED_PIXELS = 2**28
"""Largest Rows x Columns x NumberOfFrames x SamplesPerPixel decoded from one file (268 M values, about 1 GB at 32
bit): a few header bytes can announce a "decompression bomb". Raise it (``monai_synth.data.dicom.MAX_DECODED_PIXELS =
...``) for larger legitimate files."""


def _check_pixel_header(ds, filename: PathLike) -> None:
    """Refuse headers whose pixel description is inconsistent or too large, before any pixel is decoded."""
    try:
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
    except (TypeError, ValueError) as e:
        raise _dicom_error(filename, "has a non-integer Rows/Columns/NumberOfFrames/SamplesPerPixel", e) from e
    n = rows * cols * frames * samples
    if n > MAX_DECODED_PIXELS:
        raise _dicom_error(
            filename,
            f"announces {rows} x {cols} x {frames} frames x {samples} samples = {n:,} values, above the cap of "
            f"{MAX_DECODED_PIXELS:,} (monai_synth.data.dicom.MAX_DECODED_PIXELS); raise it if the file is genuine.",
        )
    if "PixelData" not in ds:  # float pixel data has no BitsStored / PixelRepresentation
        return
    allocated, stored = ds.get("BitsAllocated"), ds.get("BitsStored")
    representation = ds.get("PixelRepresentation")
    if representation is not None and int(representation) not in (0, 1):
        raise _dicom_error(filename, f"has PixelRepresentation {representation} (must be 0 = unsigned or 1 = signed)")
    if allocated is not None and stored is not None and not 1 <= int(stored) <= int(allocated):
        raise _dicom_error(
            filename, f"has BitsStored {stored} with BitsAllocated {allocated} (need 1 <= BitsStored <= BitsAllocated)"
        )
    high = ds.get("HighBit")
    if high is not None and stored is not None and int(high) != int(stored) - 1:
        raise _dicom_error(filename, f"has HighBit {high} with BitsStored {stored} (HighBit must be BitsStored - 1)")


def _decode_pixels(ds, filename: PathLike) -> np.ndarray:
    """Decode the pixel data of ``ds`` into a numpy array, with clear errors."""
    if not any(t in ds for t in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise _dicom_error(
            filename, "has no PixelData (7FE0,0010) element, so it holds no image (the file may be truncated)."
        )
    _check_pixel_header(ds, filename)
    hint = _missing_decoder_hint(ds)
    if hint is not None:
        raise _dicom_error(filename, hint + ".")
    try:
        return np.asarray(ds.pixel_array)
    except Exception as e:
        raise _dicom_error(filename, "pixel data cannot be decoded (the file may be truncated or corrupt)", e) from e


def _invert_monochrome1(arr: np.ndarray, ds) -> np.ndarray:
    """MONOCHROME1 -> MONOCHROME2: ``inverted = (lo + hi) - stored`` over the range that BitsStored can hold.

    For unsigned data ``lo = 0, hi = 2**BitsStored - 1`` so ``inverted = 2**BitsStored - 1 - stored``;
    for signed data ``lo = -2**(BitsStored-1), hi = 2**(BitsStored-1) - 1`` so ``inverted = -1 - stored``.
    """
    bits = int(getattr(ds, "BitsStored", 8 * arr.dtype.itemsize))
    if arr.dtype.kind == "f":
        return (arr.max() + arr.min()) - arr
    if int(getattr(ds, "PixelRepresentation", 0)) == 1:
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    else:
        lo, hi = 0, 2**bits - 1
    return ((lo + hi) - arr.astype(np.int64)).astype(arr.dtype)


def _rescale(ds) -> tuple[float, float]:
    """``(RescaleSlope, RescaleIntercept)``; absent tags give 1 / 0, a slope of 0 or a non-finite value is refused
    (it would map every pixel to one value, or to NaN)."""
    slope = getattr(ds, "RescaleSlope", None)
    intercept = getattr(ds, "RescaleIntercept", None)
    slope = 1.0 if slope is None or str(slope).strip() == "" else float(slope)
    intercept = 0.0 if intercept is None or str(intercept).strip() == "" else float(intercept)
    if slope == 0 or not math.isfinite(slope) or not math.isfinite(intercept):
        raise _dicom_error(
            getattr(ds, "filename", None) or "<dataset>",
            f"has RescaleSlope {slope} / RescaleIntercept {intercept}: a slope of 0 or a non-finite value makes the "
            "values meaningless; fix the header (CT: usually slope 1, intercept -1024)",
        )
    return slope, intercept


def _torch_friendly(arr: np.ndarray) -> np.ndarray:
    """Cast unsigned dtypes torch handles poorly to a wider signed dtype (lossless)."""
    if arr.dtype == np.uint16:
        return arr.astype(np.int32)
    if arr.dtype == np.uint32:
        return arr.astype(np.int64)
    return arr


def _functional_group(ds, seq: str, attr: str):
    """Value of ``attr`` from the shared (or first per-frame) functional group of an enhanced multi-frame file."""
    for group_name in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        groups = getattr(ds, group_name, None)
        if groups:
            inner = getattr(groups[0], seq, None)
            if inner and hasattr(inner[0], attr):
                return getattr(inner[0], attr)
    return None


def _pixel_spacing(ds) -> list[float] | None:
    for name in ("PixelSpacing", "ImagerPixelSpacing"):
        value = getattr(ds, name, None)
        if value is not None and len(value) == 2 and all(float(v) > 0 for v in value):
            return [float(v) for v in value]
    value = _functional_group(ds, "PixelMeasuresSequence", "PixelSpacing")
    if value is not None and all(float(v) > 0 for v in value):
        return [float(v) for v in value]
    return None


def slice_position(ds) -> float | None:
    """Position of a slice along its normal: ``dot(cross(row_dir, col_dir), ImagePositionPatient)``."""
    iop, ipp = getattr(ds, "ImageOrientationPatient", None), getattr(ds, "ImagePositionPatient", None)
    if iop is None or ipp is None or len(iop) != 6 or len(ipp) != 3:
        return None
    normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
    return float(np.dot(normal, np.asarray(ipp, float)))


DICOM_SUFFIXES = (".dcm", ".dicom")


def is_dicom_file(path: PathLike) -> bool:
    """The one rule by which folders are searched for DICOM files (series folders, guidance references, reader
    studies): a regular, non-hidden file named ``*.dcm``/``*.dicom``, or of any other name with the DICOM preamble
    (``DICM`` at byte 128), as extensionless PACS exports are."""
    p = Path(path)
    if p.name.startswith(".") or not p.is_file():
        return False
    if p.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(p, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def _list_folder(folder: Path) -> list[str]:
    """The DICOM files (:func:`is_dicom_file`) directly in ``folder``, sorted; anything else is skipped."""
    out = []
    for name in sorted(glob.glob(os.path.join(folder, "*"))):
        if is_dicom_file(name):
            out.append(name)
        else:
            logger.debug("skipping non-DICOM file %s", name)
    return out


class DeferredDicomError:
    """What :meth:`ClinicalDicomReader.read` returns instead of raising; :meth:`~ClinicalDicomReader.get_data` raises.

    ``LoadImage`` catches exceptions from ``read()`` and silently retries with its other readers (a plain
    ``PydicomReader`` would then load a mixed-series folder), finally raising a generic ``RuntimeError``.
    Deferring the error to ``get_data()``, which ``LoadImage`` does not wrap, keeps the documented error types.
    """

    def __init__(self, error: Exception) -> None:
        self.error = error


class ClinicalDicomReader(PydicomReader):
    """:class:`monai.data.PydicomReader` with clinical checks, stored values by default and MONOCHROME1 inversion.

    Works with ``LoadImage(reader=ClinicalDicomReader())``, ``LoadImage(reader="ClinicalDicomReader")`` (after
    ``import monai_synth.data``) and :func:`load_dicom`. Arrays follow MONAI's convention (``swap_ij=True``: axis 0 is
    the DICOM column index x, axis 1 the row index y, axis 2 the slice / frame) and the affine is RAS, as with
    ``NibabelReader``.

    Metadata added to MONAI's (``affine``, ``spacing``, ``spatial_shape``, ``space`` and the pruned DICOM tags
    ``00200037``/``00200032``/``00280030``):

    - ``"RescaleSlope"``, ``"RescaleIntercept"`` (float; 1.0 / 0.0 when the file has none), and the raw DICOM JSON
      elements ``"00281053"``/``"00281052"`` when the file has them;
    - ``"rescale_applied"`` (bool): True when pixel values are already ``stored * slope + intercept`` (e.g. HU);
      False means stored values and an HU transform must apply the slope/intercept from the meta;
    - ``"Modality"``, ``"PhotometricInterpretation"`` (as written in the file), ``"SeriesInstanceUID"``;
    - ``"monochrome1_inverted"`` (bool): MONOCHROME1 pixels were mapped with ``(lo + hi) - stored`` (see
      :func:`_invert_monochrome1`), so bright = dense (MONOCHROME2 convention) for every output.

    Args:
        rescale: apply ``RescaleSlope``/``RescaleIntercept`` to the pixels (float32 out). Default False: stored
            values. A series whose slices have different slope/intercept is always rescaled per slice.
        invert_monochrome1: invert MONOCHROME1 images to the MONOCHROME2 convention.
        kwargs: passed to :class:`monai.data.PydicomReader` (``affine_lps_to_ras``, ``swap_ij``, ``prune_metadata``,
            ``pydicom.dcmread`` arguments, ...).

    Raises:
        DicomReadError: (a ValueError) a file is not DICOM, truncated, corrupt, has no PixelData, needs a decoder that
            is not installed, or a folder is empty / mixes series / mixes slice sizes / has duplicate positions.
        FileNotFoundError: the path does not exist.
    """

    def __init__(self, rescale: bool = False, invert_monochrome1: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("fname_regex", "")
        super().__init__(**kwargs)
        self.rescale = rescale
        self.invert_monochrome1 = invert_monochrome1

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs: Any):
        """Read DICOM file(s) or folder(s) holding one series each.

        Args:
            data: a file, a folder holding one series, or a sequence of those (stacked as channels).
            kwargs: ``pydicom.dcmread`` arguments, overriding the constructor's.

        Returns:
            a dataset, a list of datasets (one series) or a list of those, as :meth:`PydicomReader.read`; on a
            :class:`DicomReadError` / :class:`FileNotFoundError`, a :class:`DeferredDicomError` that
            :meth:`get_data` raises (see there why).
        """
        try:
            return self._read(data, **kwargs)
        except (DicomReadError, FileNotFoundError) as e:
            return DeferredDicomError(e)

    def get_data(self, data) -> tuple[np.ndarray, dict]:
        """:meth:`PydicomReader.get_data`, raising the error deferred by :meth:`read` if there was one.

        Raises:
            DicomReadError: see the class docstring.
            FileNotFoundError: the path does not exist.
        """
        if isinstance(data, DeferredDicomError):
            raise data.error
        try:
            return super().get_data(data)
        except (DicomReadError, FileNotFoundError):
            raise
        except Exception as e:  # malformed tags (bad orientation, non-numeric spacing, ...): one documented type
            names = [str(f) for f in ensure_tuple(self.filenames)][:3]
            raise DicomReadError(f"DICOM {names}: cannot build the image ({type(e).__name__}: {e}).") from e

    def _read(self, data: Sequence[PathLike] | PathLike, **kwargs: Any):
        filenames = [f"{f}" for f in ensure_tuple(data)]
        self.filenames = list(filenames)
        kwargs_ = {k: v for k, v in self.kwargs.items()}
        kwargs_.update(kwargs)
        self.has_series = False
        img_: list = []
        for i, name in enumerate(filenames):
            path = Path(name)
            if not path.exists():
                raise FileNotFoundError(f"DICOM path {name!r} does not exist.")
            if path.is_dir():
                slice_files = _list_folder(path)
                if not slice_files:
                    raise DicomReadError(f"DICOM folder {name!r} holds no DICOM files (*.dcm or files with a header).")
                slices = [_read_dataset(f, **kwargs_) for f in slice_files]
                self._check_series(name, slices, slice_files)
                if len(slices) > 1:
                    self.has_series = True
                    img_.append(slices)
                    self.filenames[i] = slice_files  # type: ignore[call-overload]
                else:
                    img_.append(slices[0])
                    self.filenames[i] = slice_files[0]
            else:
                img_.append(_read_dataset(name, **kwargs_))
        return img_[0] if len(filenames) == 1 else img_

    @staticmethod
    def _check_series(folder: str, slices: list, files: list[str]) -> None:
        """One SeriesInstanceUID and one (Rows, Columns) per folder, else :class:`DicomReadError` naming files."""
        by_uid: dict[str, list[str]] = {}
        by_shape: dict[tuple, list[str]] = {}
        by_spacing: dict[tuple, list[str]] = {}
        for ds, f in zip(slices, files):
            spacing = _pixel_spacing(ds)
            by_spacing.setdefault(tuple(round(v, 4) for v in spacing) if spacing else None, []).append(Path(f).name)
            by_uid.setdefault(str(getattr(ds, "SeriesInstanceUID", "<missing>")), []).append(Path(f).name)
            by_shape.setdefault((getattr(ds, "Rows", None), getattr(ds, "Columns", None)), []).append(Path(f).name)
        if len(by_uid) > 1:
            detail = "; ".join(f"{uid}: {names[:5]}{' ...' if len(names) > 5 else ''}" for uid, names in by_uid.items())
            raise DicomReadError(
                f"DICOM folder {folder!r} mixes {len(by_uid)} series (SeriesInstanceUID -> files): {detail}. "
                "Put each series in its own folder."
            )
        if len(by_shape) > 1:
            detail = "; ".join(f"{shape}: {names[:5]}" for shape, names in by_shape.items())
            raise DicomReadError(
                f"DICOM folder {folder!r} has slices of different sizes (Rows, Columns) -> files: {detail}."
            )
        if len(by_spacing) > 1:
            detail = "; ".join(f"{sp}: {names[:5]}" for sp, names in by_spacing.items())
            raise DicomReadError(
                f"DICOM folder {folder!r} has slices with different PixelSpacing (mm) -> files: {detail}. "
                "Resample them to one grid or put them in separate folders."
            )

    def _combine_dicom_series(self, data, filenames):
        """Stack one series sorted by position along the slice normal (then InstanceNumber)."""
        items = list(zip(data, filenames))
        positions = [slice_position(ds) for ds, _ in items]
        if all(p is not None for p in positions):
            keys = [(p, int(getattr(ds, "InstanceNumber", 0) or 0)) for p, (ds, _) in zip(positions, items)]
            seen: dict[float, str] = {}
            for p, (_, f) in zip(positions, items):
                rp = round(p, 4)
                if rp in seen:
                    raise DicomReadError(
                        f"DICOM files {seen[rp]!r} and {str(f)!r} are at the same slice position {p:.4f} mm; "
                        "a folder must hold one series with one slice per position."
                    )
                seen[rp] = str(f)
        else:
            missing = [str(f) for ds, f in items if getattr(ds, "InstanceNumber", None) is None]
            if missing:
                raise DicomReadError(
                    f"DICOM files {missing[:5]} have neither ImagePositionPatient/ImageOrientationPatient nor "
                    "InstanceNumber, so the slice order cannot be determined."
                )
            keys = [(0.0, int(ds.InstanceNumber)) for ds, _ in items]
        order = sorted(range(len(items)), key=lambda k: keys[k])
        items = [items[k] for k in order]
        if len(items) > 2 and all(p is not None for p in positions):
            gaps = np.diff([positions[k] for k in order])
            median = float(gaps.min())
            bad = np.flatnonzero(np.abs(gaps - median) > max(1e-3, 0.01 * abs(median)))
            if bad.size:
                k = int(bad[0])
                raise DicomReadError(
                    f"DICOM series in {str(Path(items[0][1]).parent)!r}: uneven slice spacing, gap of {gaps[k]:.4g} mm "
                    "between "
                    f"{str(items[k][1])!r} and {str(items[k + 1][1])!r} (smallest gap {median:.4g} mm); a slice is "
                    "missing or the folder mixes acquisitions; load the contiguous parts separately."
                )

        rescales = {_rescale(ds) for ds, _ in items}
        per_slice = len(rescales) > 1 and not self.rescale
        if per_slice:
            logger.info("series %s has per-slice RescaleSlope/Intercept; rescaling each slice", filenames[0])
        arrays = [self._get_array_data(ds, f, force_rescale=per_slice) for ds, f in items]
        first, last = items[0][0], items[-1][0]
        spacing = _pixel_spacing(first) or [1.0, 1.0]
        if all(p is not None for p in positions):
            sorted_pos = [positions[k] for k in order]
            step = float(np.mean(np.diff(sorted_pos))) if len(sorted_pos) > 1 else 1.0
        else:
            step = float(getattr(first, "SpacingBetweenSlices", getattr(first, "SliceThickness", 1.0)) or 1.0)
        stack = np.stack(arrays, axis=-1)
        meta = self._get_meta_dict(first)
        meta["spacing"] = np.asarray(spacing + [abs(step)])
        if hasattr(last, "ImagePositionPatient"):
            meta["lastImagePositionPatient"] = np.asarray(last.ImagePositionPatient, dtype=float)
        meta["spatial_shape"] = stack.shape
        if per_slice:
            meta[RESCALE_SLOPE], meta[RESCALE_INTERCEPT], meta[RESCALE_APPLIED] = 1.0, 0.0, True
        return stack, meta

    def _get_array_data(self, img, filename, force_rescale: bool = False):
        """Decode, invert MONOCHROME1, move multi-frame frames last, optionally rescale."""
        arr = _decode_pixels(img, filename)
        if self.invert_monochrome1 and str(getattr(img, "PhotometricInterpretation", "")) == "MONOCHROME1":
            arr = _invert_monochrome1(arr, img)
        frames = int(getattr(img, "NumberOfFrames", 1) or 1)
        if frames > 1 and not hasattr(img, "SegmentSequence"):
            arr = np.moveaxis(arr, 0, 2)  # (frames, rows, cols[, samples]) -> (rows, cols, frames[, samples])
        if hasattr(img, "SegmentSequence"):
            return arr
        if self.rescale or force_rescale:
            slope, intercept = self._frame_rescale(img)
            return arr.astype(np.float32) * np.float32(slope) + np.float32(intercept)
        return _torch_friendly(arr)

    @staticmethod
    def _frame_rescale(ds) -> tuple[float, float]:
        if hasattr(ds, "RescaleSlope") or hasattr(ds, "RescaleIntercept"):
            return _rescale(ds)
        slope = _functional_group(ds, "PixelValueTransformationSequence", "RescaleSlope")
        intercept = _functional_group(ds, "PixelValueTransformationSequence", "RescaleIntercept")
        return float(slope if slope is not None else 1.0), float(intercept if intercept is not None else 0.0)

    def _get_meta_dict(self, img) -> dict:
        meta = super()._get_meta_dict(img)
        for tag, name in (("00281053", "RescaleSlope"), ("00281052", "RescaleIntercept")):
            if hasattr(img, name):
                meta[tag] = {"vr": "DS", "Value": [float(getattr(img, name))]}
        # enhanced multi-frame: geometry from the functional groups
        if int(getattr(img, "NumberOfFrames", 1) or 1) > 1 and not hasattr(img, "SegmentSequence"):
            iop = _functional_group(img, "PlaneOrientationSequence", "ImageOrientationPatient")
            if iop is not None and "00200037" not in meta:
                meta["00200037"] = {"vr": "DS", "Value": [float(v) for v in iop]}
            per_frame = getattr(img, "PerFrameFunctionalGroupsSequence", None)
            if per_frame and hasattr(per_frame[0], "PlanePositionSequence") and "00200032" not in meta:
                meta["00200032"] = {
                    "vr": "DS",
                    "Value": [float(v) for v in per_frame[0].PlanePositionSequence[0].ImagePositionPatient],
                }
                meta["lastImagePositionPatient"] = np.asarray(
                    per_frame[-1].PlanePositionSequence[0].ImagePositionPatient, dtype=float
                )
        spacing = _pixel_spacing(img)
        if spacing is not None:
            meta["00280030"] = {"vr": "DS", "Value": spacing}
        elif "00280030" in meta:
            meta.pop("00280030")  # e.g. PixelSpacing [0, 0]: unusable
        if int(getattr(img, "NumberOfFrames", 1) or 1) > 1:
            step = (
                getattr(img, "SpacingBetweenSlices", None)
                or _functional_group(img, "PixelMeasuresSequence", "SpacingBetweenSlices")
                or getattr(img, "SliceThickness", None)
                or _functional_group(img, "PixelMeasuresSequence", "SliceThickness")
            )
            meta["spacing"] = np.asarray((spacing or [1.0, 1.0]) + [abs(float(step or 1.0))])
        slope, intercept = self._frame_rescale(img)
        meta[RESCALE_SLOPE] = slope
        meta[RESCALE_INTERCEPT] = intercept
        meta[RESCALE_APPLIED] = bool(self.rescale)
        meta["Modality"] = str(getattr(img, "Modality", ""))
        meta["PhotometricInterpretation"] = str(getattr(img, "PhotometricInterpretation", ""))
        meta["SeriesInstanceUID"] = str(getattr(img, "SeriesInstanceUID", ""))
        meta[MONOCHROME1_INVERTED] = bool(
            self.invert_monochrome1 and meta["PhotometricInterpretation"] == "MONOCHROME1"
        )
        return meta

    def _get_affine(self, metadata: dict, lps_to_ras: bool = True):
        """MONAI's DICOM affine; for files without patient geometry (CR/DX/MG), a diagonal of the pixel spacing."""
        if "00200037" in metadata and "00200032" in metadata:
            return super()._get_affine(metadata, lps_to_ras)
        affine = np.eye(4)
        spacing = metadata.get("00280030", {}).get("Value") or [1.0, 1.0]
        dr, dc = (float(v) for v in spacing[:2])
        affine[0, 0], affine[1, 1] = dr, dc  # rows (y) on axis 0 before swap_ij, as in PydicomReader
        sp = metadata.get("spacing")
        if sp is not None and len(sp) > 2:
            affine[2, 2] = float(sp[2])
        return orientation_ras_lps(affine) if lps_to_ras else affine


def load_dicom(
    path: PathLike | Sequence[PathLike],
    rescale: bool = False,
    ensure_channel_first: bool = False,
    dtype: Any = np.float32,
    **reader_kwargs: Any,
) -> MetaTensor:
    """Load a DICOM file, a folder holding one series, or a multi-frame file as a :class:`MetaTensor`.

    Args:
        path: file or folder (or a sequence of them, stacked as channels).
        rescale: return ``stored * RescaleSlope + RescaleIntercept`` (HU for CT) instead of stored values.
        ensure_channel_first: add/move the channel dimension first, as ``LoadImage(ensure_channel_first=True)``.
        dtype: output dtype (float32 by default, as ``LoadImage``).
        reader_kwargs: passed to :class:`ClinicalDicomReader`.

    Returns:
        the image, with the metadata listed in :class:`ClinicalDicomReader`.

    Raises:
        DicomReadError: unreadable file or inconsistent folder (message names the files).
        FileNotFoundError: ``path`` does not exist.
    """
    reader = ClinicalDicomReader(rescale=rescale, **reader_kwargs)
    loader = LoadImage(image_only=True, ensure_channel_first=ensure_channel_first, dtype=dtype)
    return loader(path, reader=reader)
