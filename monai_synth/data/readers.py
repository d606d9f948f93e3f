"""A SimpleITK-based :class:`monai.data.ImageReader`, and registration of this package's readers with ``LoadImage``.

MONAI resolves ``LoadImage(reader="Name")`` by (1) a class ``Name`` in ``monai.data``, (2) a dotted path
(``"monai_synth.data.SimpleITKReader"``), (3) ``look_up_option(name.lower(), SUPPORTED_READERS)`` in
``monai.transforms.io.array``. :func:`register_readers` (run on ``import monai_synth.data``) adds
``"simpleitkreader"`` and ``"clinicaldicomreader"`` to that dictionary so the short names work.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.config import PathLike
from monai.data import ImageReader
from monai.data.image_reader import _copy_compatible_dict, _stack_images
from monai.data.utils import orientation_ras_lps
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple, optional_import

sitk, has_sitk = optional_import("SimpleITK")

__all__ = ["SimpleITKReader", "register_readers", "SITK_SUFFIXES"]

logger = logging.getLogger(__name__)

# Suffixes SimpleITKReader claims when LoadImage auto-selects a reader (DICOM is left to the DICOM readers;
# pass reader="SimpleITKReader" explicitly to read DICOM through SimpleITK/GDCM).
SITK_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".hdr", ".img", ".img.gz")


def _suffix_ok(name: PathLike) -> bool:
    low = str(name).lower()
    return any(low.endswith(s) for s in SITK_SUFFIXES)


class SimpleITKReader(ImageReader):
    """Load NIfTI / NRRD / MetaImage / DICOM series with SimpleITK, in MONAI's array and affine convention.

    The array is indexed ``(x, y, z[, channel])`` (SimpleITK's ``GetArrayFromImage`` gives ``(z, y, x)``; the spatial
    axes are reversed, like ``ITKReader(reverse_indexing=True)``), and the affine is
    ``[[D @ diag(spacing), origin], [0, 1]]`` in LPS, converted to RAS (first two rows negated) when
    ``affine_lps_to_ras`` is True, so it matches ``NibabelReader`` and ``PydicomReader``.

    DICOM through SimpleITK/GDCM: a folder must hold exactly one series (``GetGDCMSeriesIDs``); slices are sorted by
    position, and GDCM applies RescaleSlope/RescaleIntercept, so CT comes out in HU (meta ``"rescale_applied"``
    True, with ``"RescaleSlope"``/``"RescaleIntercept"`` from the tags when present).

    Args:
        channel_dim: the channel axis of the data, if known (``None``: multi-component images get ``-1``).
        affine_lps_to_ras: convert the affine from LPS (ITK) to RAS (NIfTI / MONAI default).
        allow_non_finite: accept NaN/Inf voxels (by default they raise a ValueError naming the file).
        kwargs: unused, accepted so ``LoadImage`` can pass its reader arguments.

    Raises:
        FileNotFoundError: a path does not exist.
        ValueError: SimpleITK cannot read the file, a DICOM folder is empty or holds several series, or the image
            holds NaN/Inf voxels (unless ``allow_non_finite``).
    """

    def __init__(
        self,
        channel_dim: int | None = None,
        affine_lps_to_ras: bool = True,
        allow_non_finite: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        self.allow_non_finite = allow_non_finite
        self._names: list[str] = []
        if not has_sitk:
            raise optional_import("SimpleITK")[0]  # re-raises OptionalImportError with install hint
        self.channel_dim = channel_dim
        self.affine_lps_to_ras = affine_lps_to_ras
        self.kwargs = kwargs

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        """True for NIfTI/NRRD/MetaImage/Analyze names (DICOM only when requested explicitly by name)."""
        return has_sitk and all(_suffix_ok(f) for f in ensure_tuple(filename))

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs: Any):
        """Read image(s) or DICOM series folder(s) into ``SimpleITK.Image`` objects.

        Args:
            data: a file, a DICOM series folder, or a sequence of those (stacked as channels).
            kwargs: unused.

        Returns:
            one ``SimpleITK.Image`` or a list of them.
        """
        out = []
        self._names = [f"{n}" for n in ensure_tuple(data)]
        for name in ensure_tuple(data):
            name = f"{name}"
            if not os.path.exists(name):
                raise FileNotFoundError(f"image path {name!r} does not exist.")
            try:
                out.append(self._read_series(name) if Path(name).is_dir() else sitk.ReadImage(name))
            except RuntimeError as e:  # SimpleITK reports every I/O failure as RuntimeError
                raise ValueError(f"SimpleITK cannot read {name!r}: {str(e).strip().splitlines()[-1]}") from e
        return out[0] if len(out) == 1 else out

    @staticmethod
    def _read_series(folder: str):
        ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder)
        if not ids:
            raise ValueError(f"DICOM folder {folder!r} holds no DICOM series readable by SimpleITK/GDCM.")
        if len(ids) > 1:
            raise ValueError(
                f"DICOM folder {folder!r} holds {len(ids)} series {list(ids)}; keep one series per folder."
            )
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, ids[0])
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        reader.MetaDataDictionaryArrayUpdateOn()
        reader.LoadPrivateTagsOff()
        image = reader.Execute()
        # keep the first slice's tags (the series reader does not copy them to the image)
        for key in reader.GetMetaDataKeys(0):
            image.SetMetaData(key, reader.GetMetaData(0, key))
        return image

    def get_data(self, img) -> tuple[np.ndarray, dict]:
        """Array ``(x, y, z[, c])`` and metadata (``affine``, ``original_affine``, ``spacing``, ``spatial_shape``,
        ``space``, ``original_channel_dim`` and the image's own meta keys).

        Args:
            img: a ``SimpleITK.Image`` or a list of them (stacked on a new first axis, as other MONAI readers).
        """
        arrays: list[np.ndarray] = []
        compatible_meta: dict = {}
        for image in img if isinstance(img, (list, tuple)) else [img]:  # a sitk.Image is iterable: no ensure_tuple
            arr = sitk.GetArrayFromImage(image)
            if not self.allow_non_finite and arr.dtype.kind in "fc" and not np.isfinite(arr).all():
                names = ", ".join(repr(n) for n in self._names) or "<image>"
                n_nan, n_inf = int(np.isnan(arr).sum()), int(np.isinf(arr).sum())
                raise ValueError(
                    f"image {names} holds {n_nan} NaN and {n_inf} Inf voxels; replace them (e.g. np.nan_to_num) "
                    "before training, or pass allow_non_finite=True to SimpleITKReader."
                )
            ndim = image.GetDimension()
            n_comp = image.GetNumberOfComponentsPerPixel()
            spatial_axes = tuple(range(ndim))[::-1]
            arr = np.transpose(arr, spatial_axes + ((ndim,) if n_comp > 1 else ()))
            meta = self._meta(image)
            if self.channel_dim is not None:
                meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = self.channel_dim
            else:
                meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = -1 if n_comp > 1 else float("nan")
            arrays.append(np.ascontiguousarray(arr))
            _copy_compatible_dict(meta, compatible_meta)
        return _stack_images(arrays, compatible_meta), compatible_meta

    def _meta(self, image) -> dict:
        ndim = image.GetDimension()
        direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(ndim, ndim)
        spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
        affine = np.eye(ndim + 1)
        affine[:ndim, :ndim] = direction @ np.diag(spacing)
        affine[:ndim, -1] = np.asarray(image.GetOrigin(), dtype=np.float64)
        if self.affine_lps_to_ras:
            affine = orientation_ras_lps(affine)
        meta: dict = {}
        for key in image.GetMetaDataKeys():
            value = image.GetMetaData(key)
            meta[key] = value.strip() if isinstance(value, str) else value
        slope, intercept = meta.get("0028|1053"), meta.get("0028|1052")
        is_dicom = "0008|0060" in meta or "0020|000e" in meta
        if is_dicom:
            meta["Modality"] = meta.get("0008|0060", "")
            meta["rescale_applied"] = True
            meta["RescaleSlope"] = float(slope) if slope else 1.0
            meta["RescaleIntercept"] = float(intercept) if intercept else 0.0
        meta[MetaKeys.AFFINE] = affine
        meta[MetaKeys.ORIGINAL_AFFINE] = affine.copy()
        meta[MetaKeys.SPATIAL_SHAPE] = np.asarray(image.GetSize())
        meta["spacing"] = spacing
        meta[MetaKeys.SPACE] = SpaceKeys.RAS if self.affine_lps_to_ras else SpaceKeys.LPS
        return meta


def register_readers() -> None:
    """Add ``"simpleitkreader"`` and ``"clinicaldicomreader"`` to MONAI's ``SUPPORTED_READERS`` (idempotent).

    ``LoadImage`` tries default readers from the last entry to the first, and ``PydicomReader`` (the first entry)
    accepts any name, so ``clinicaldicomreader`` is put at the very front (never auto-selected: default behaviour is
    unchanged) and ``simpleitkreader`` right after the DICOM readers (auto-selected only for the suffixes in
    :data:`SITK_SUFFIXES` that no later reader such as ``NibabelReader`` claims, e.g. ``.mha``).
    """
    from monai.transforms.io import array as io_array

    from monai_synth.data.dicom import ClinicalDicomReader

    readers = io_array.SUPPORTED_READERS
    if "simpleitkreader" in readers and "clinicaldicomreader" in readers:
        return
    items = [(k, v) for k, v in readers.items() if k not in ("simpleitkreader", "clinicaldicomreader")]
    dicom_keys = [k for k, _ in items if "dicom" in k]
    insert_at = max((i for i, (k, _) in enumerate(items) if k in dicom_keys), default=-1) + 1
    items.insert(insert_at, ("simpleitkreader", SimpleITKReader))
    items.insert(0, ("clinicaldicomreader", ClinicalDicomReader))
    readers.clear()
    readers.update(items)
