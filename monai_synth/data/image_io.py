"""The one 2D image loader of monai_synth, built on MONAI ``LoadImage`` with the project's readers.

Orientation: MONAI readers return 2D images as ``(C, W, H)`` (first spatial axis = columns, the DICOM/ITK
convention). Every in-memory image of monai_synth is ``(C, H, W)``: rows first, as the PNG/DICOM writers store them
and as matplotlib shows them. :func:`load_image_2d` does that transpose once, here.

Readers: DICOM (files with a ``.dcm`` suffix, extensionless files with the ``DICM`` preamble, series folders) go
through :class:`~monai_synth.data.ClinicalDicomReader`; PNG/JPEG through MONAI's ``PILReader``; NIfTI, MHA, NRRD
through MONAI's automatic choice (``NibabelReader``, then :class:`~monai_synth.data.SimpleITKReader`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import LoadImage

from monai_synth.data.dicom import DICOM_SUFFIXES, is_dicom_file
from monai_synth.data.readers import register_readers

__all__ = ["PIL_SUFFIXES", "is_dicom_path", "load_image_2d", "min_max", "resize_images"]

PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

register_readers()
_LOADERS: dict[str, LoadImage] = {}


def _loader(reader: str | None) -> LoadImage:
    key = reader or "auto"
    if key not in _LOADERS:
        _LOADERS[key] = LoadImage(reader=reader, image_only=True, ensure_channel_first=True, dtype=None)
    return _LOADERS[key]


def is_dicom_path(path: str | os.PathLike) -> bool:
    """True for a series folder, a ``.dcm``/``.dicom`` path, or a file with the DICOM preamble
    (:func:`~monai_synth.data.dicom.is_dicom_file`)."""
    p = Path(path)
    return p.is_dir() or p.suffix.lower() in DICOM_SUFFIXES or is_dicom_file(p)


def min_max(x: torch.Tensor) -> torch.Tensor:
    """Scale to [0, 1] by the image's own minimum and maximum (a constant image gives zeros)."""
    lo, hi = x.min(), x.max()
    return (x - lo) / (hi - lo) if hi > lo else torch.zeros_like(x)


def resize_images(images: torch.Tensor, size: int, value_range: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """Resize ``(N, C, H, W)`` to ``size`` x ``size``: bilinear, anti-aliased when shrinking, clipped to
    ``value_range`` (unchanged when already at ``size``)."""
    if images.shape[-2:] == (size, size):
        return images
    shrink = images.shape[-1] > size or images.shape[-2] > size
    out = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
    return out.clamp(*value_range)


def _stored_maximum(path: Path, reader: str | None, dtype: np.dtype) -> float:
    """The largest value the file can store (readers widen e.g. uint16 to int32): DICOM BitsStored, PNG mode."""
    if reader == "ClinicalDicomReader":
        import pydicom

        first = path if path.is_file() else sorted(f for f in path.rglob("*") if f.is_file())[0]
        ds = pydicom.dcmread(first, stop_before_pixels=True, specific_tags=["BitsStored", "PixelRepresentation"])
        bits = int(ds.get("BitsStored", 8)) - int(ds.get("PixelRepresentation", 0) or 0)
        return float(2**bits - 1)
    if reader == "PILReader":
        from PIL import Image

        with Image.open(path) as im:
            mode = im.mode
        return 65535.0 if mode.startswith("I;16") else float(2**31 - 1) if mode in ("I", "I;32") else 255.0
    return float(np.iinfo(dtype).max)


def load_image_2d(
    path: str | os.PathLike, window: str | None = None, reader: str | None = None, rescale: bool | str = True
) -> torch.Tensor:
    """Read one 2D image (or the middle slice of a volume) as ``float32 (1, H, W)``, rows first.

    Args:
        path: image file (DICOM, PNG, JPEG, NIfTI, MHA, ...) or a DICOM series folder.
        window: HU window preset (e.g. ``"lung"``) applied after the rescale tags (CT); the result is in [0, 1].
        reader: a ``LoadImage`` reader name; default: chosen from the file (see the module docstring).
        rescale: without ``window``: ``True`` (or ``"min_max"``) scales to [0, 1] by the image's minimum and maximum
            (:func:`min_max`); ``"dtype"`` divides integer images by the largest stored value (``2**BitsStored - 1``
            for DICOM, 65535 for 16-bit PNG, 255 for the 8-bit PNG/DICOM that :mod:`monai_synth.data.writers`
            writes; float images are kept), the inverse of the writers; ``False`` keeps the stored values.

    Raises:
        ValueError: the file holds no 2D image or volume (names the file and the shape).
    """
    from monai_synth.transforms import HUWindow, ScaleToHU

    if reader is None:
        if is_dicom_path(path):
            reader = "ClinicalDicomReader"
        elif Path(path).suffix.lower() in PIL_SUFFIXES:
            reader = "PILReader"
    img = _loader(reader)(str(path))
    if window is not None:
        img = HUWindow(window)(ScaleToHU()(img.float()))
    arr = np.asarray(img)
    x = torch.as_tensor(arr, dtype=torch.float32)
    if rescale == "dtype" and np.issubdtype(arr.dtype, np.integer):
        x = x / _stored_maximum(Path(path), reader, arr.dtype)
    if x.ndim == 4:  # (C, W, H, D): a volume -> its middle slice
        x = x[..., x.shape[-1] // 2]
    if x.ndim != 3:
        raise ValueError(f"{str(path)!r}: expected a 2D image or a volume, got array shape {tuple(x.shape)}.")
    if x.shape[0] > 1:  # RGB(A) -> grayscale
        x = x[:3].mean(0, keepdim=True)
    x = x.transpose(-1, -2)  # (C, W, H) -> (C, H, W): rows first
    if rescale not in (True, False, "min_max", "dtype"):
        raise ValueError(f"`rescale` must be True, False, 'min_max' or 'dtype', got {rescale!r}.")
    return x if window is not None or rescale in (False, "dtype") else min_max(x)
