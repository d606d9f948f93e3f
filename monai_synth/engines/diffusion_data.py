"""Training data for the diffusion bundles: one function that turns any supported source into an in-memory datalist.

Every item is ``{"image": float32 (1, S, S) in [0, 1], "label": int}`` in rows x columns orientation (the
orientation of the PNG/DICOM writers), resized to ``image_size`` with area interpolation when downsampling. The
bundle then maps [0, 1] to the model's [-1, 1] with ``ScaleIntensityRanged``.

Sources (:class:`DataSource`):

* ``demo``: the built-in synthetic chest X-ray demo set (:func:`monai_synth.data.make_demo_images`), offline.
* ``medmnist``: a MedMNIST ``.npz`` (PneumoniaMNIST layout ``<split>_images`` / ``<split>_labels``).
* ``datalist``: a Decathlon-style datalist JSON of image files (PNG, NIfTI, DICOM) with integer labels.
* ``dicom``: a folder of DICOM files/series plus a label CSV (:func:`monai_synth.data.dicom_folder_datalist`).

Everything is loaded into memory (fine for 28-128 px sets of a few thousand images; 5,000 images at 256 px take
1.3 GB).
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
from monai.utils import StrEnum

__all__ = ["DataSource", "load_diffusion_training_data", "resize_unit_image"]

logger = logging.getLogger(__name__)


class DataSource(StrEnum):
    """Training data sources of :func:`load_diffusion_training_data`."""

    DEMO = "demo"
    MEDMNIST = "medmnist"
    DATALIST = "datalist"
    DICOM = "dicom"


def resize_unit_image(image: np.ndarray, image_size: int) -> np.ndarray:
    """``(C, H, W)`` -> ``(1, S, S)`` float32: channel mean, area (down) or bilinear (up) resize, clip to [0, 1]."""
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.shape[0] != 1:
        arr = arr.mean(axis=0, keepdims=True)
    if arr.shape[1:] != (image_size, image_size):
        mode = "area" if min(arr.shape[1:]) >= image_size else "bilinear"
        t = torch.from_numpy(arr)[None]
        kwargs = {} if mode == "area" else {"align_corners": False}
        arr = torch.nn.functional.interpolate(t, size=(image_size, image_size), mode=mode, **kwargs)[0].numpy()
    return np.clip(arr, 0.0, 1.0).astype(np.float32)


def _min_max(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr, dtype=np.float32)
    lo, hi = float(arr.min()), float(arr.max())
    return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)


def _load_files(items: list[dict], image_size: int, reader: str | None) -> list[dict]:
    from monai.transforms import LoadImage

    loader = LoadImage(image_only=True, ensure_channel_first=True, reader=reader)
    out = []
    for it in items:
        img = np.asarray(loader(it["image"]), dtype=np.float32)
        if img.ndim == 4 and img.shape[-1] == 1:  # (C, W, H, 1) from single-slice volumes
            img = img[..., 0]
        if img.ndim != 3:
            raise ValueError(f"{it['image']!r}: expected a 2D image, got array shape {img.shape}.")
        img = np.swapaxes(img, 1, 2)  # MONAI readers give (x=columns, y=rows); store rows x columns
        out.append({"image": resize_unit_image(_min_max(img), image_size), "label": int(it["label"])})
    return out


def load_diffusion_training_data(
    source: str | DataSource = "demo",
    path: str | os.PathLike | None = None,
    image_size: int = 28,
    split: str = "train",
    labels_csv: str | os.PathLike | None = None,
    demo_n_per_class: int = 64,
    demo_kind: str = "cxr",
    seed: int = 0,
) -> list[dict]:
    """Load a labelled training set as ``[{"image": (1, S, S) float32 in [0, 1], "label": int}, ...]``.

    Args:
        source: ``"demo"``, ``"medmnist"``, ``"datalist"`` or ``"dicom"``.
        path: the ``.npz`` (medmnist), the datalist JSON (datalist) or the DICOM folder (dicom); unused for demo.
        image_size: output size S (e.g. 28, 64, 128, 256).
        split: MedMNIST split (``"train"``, ``"val"``, ``"test"``) or datalist key (``"train"`` means ``"training"``).
        labels_csv: label CSV for the ``dicom`` source (columns ``id``, ``label``).
        demo_n_per_class: images per class of the demo set.
        demo_kind: demo modality (``"cxr"``, ``"ct"``, ``"mg"``).
        seed: demo seed.

    Raises:
        ValueError: unknown source or missing ``path``/``labels_csv`` (naming the field).
    """
    key = str(source).lower()
    options = {m.value for m in DataSource}
    if key not in options:
        raise ValueError(f"`data_source` must be one of {sorted(options)}, got {source!r}.")
    if key != DataSource.DEMO and path is None:
        raise ValueError(f"`data_path` is required for data_source={key!r}.")
    image_size = int(image_size)
    if key == DataSource.DEMO:
        from monai_synth.data.demo import make_demo_images

        demo = make_demo_images(kind=demo_kind, n_per_class=int(demo_n_per_class), size=max(image_size, 16), seed=seed)
        images = _min_max(demo.images)  # one scaling for the whole set keeps relative brightness
        return [
            {"image": resize_unit_image(images[i], image_size), "label": int(demo.labels[i])}
            for i in range(len(demo.labels))
        ]
    if key == DataSource.MEDMNIST:
        from monai_synth.data.datalists import medmnist_datalist

        return [
            {"image": resize_unit_image(it["image"], image_size), "label": int(it["label"])}
            for it in medmnist_datalist(path, split)
        ]
    if key == DataSource.DATALIST:
        from monai_synth.data.datalists import load_datalist_json

        items = load_datalist_json(path, key="training" if split == "train" else split)
        return _load_files(items, image_size, reader=None)
    if labels_csv is None:
        raise ValueError("`label_csv` is required for data_source='dicom'.")
    from monai_synth.data.datalists import dicom_folder_datalist

    return _load_files(dicom_folder_datalist(path, labels_csv).items, image_size, reader="ClinicalDicomReader")
