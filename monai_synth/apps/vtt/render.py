"""What the reader's browser gets of an image: its pixels under a display window, as a freshly encoded 8-bit PNG.

Pixels come from the one image loader (:func:`monai_synth.data.load_image_2d`, ``rescale=False``: stored values, rows
first, full resolution). DICOM stored values go through the modality LUT (``RescaleSlope`` / ``RescaleIntercept``,
DICOM PS3.3 C.11.1: Hounsfield units for CT), so window center and width are in HU for CT and in stored units for
everything else (0-255 for an 8-bit PNG). The window maps ``[center - width/2, center + width/2]`` linearly to
black..white (:func:`monai_synth.transforms.hu_window`).

Default window: the DICOM VOI window (``WindowCenter`` / ``WindowWidth``, first value) when the file has one (not for
MONOCHROME1, which the loader has inverted); the full 0-255 range for 8-bit data; else the image's minimum..maximum.

Blinding: the PNG is encoded in memory from the windowed pixels only, with no text chunks, no resolution or time
chunk, no ICC profile: nothing of the source file (name, tags, format, bit depth) is in it, only its pixels.
"""

from __future__ import annotations

import io
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from monai_synth.data.image_io import is_dicom_path, load_image_2d
from monai_synth.data.writers import to_uint8
from monai_synth.transforms import hu_window

__all__ = ["DisplayImage", "DisplayImageCache", "encode_png", "load_display_image", "render_png"]


@dataclass(frozen=True)
class DisplayImage:
    """An image ready for windowing.

    Attributes:
        values: ``float32 (H, W)``: modality values (HU for CT DICOM) or stored values.
        default_window: ``(center, width)`` shown until the reader changes it.
    """

    values: np.ndarray
    default_window: tuple[float, float]


def _first_dicom_file(path: Path) -> Path:
    if path.is_file():
        return path
    files = sorted(f for f in path.rglob("*") if f.is_file() and not f.name.startswith("."))
    if not files:
        raise FileNotFoundError(f"DICOM series folder {str(path)!r} holds no file.")
    return files[0]


def _first_number(value: object) -> float | None:
    """A DICOM number, or the first of a multi-valued one (``WindowCenter`` may hold several); ``None`` if absent."""
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):  # pydicom MultiValue
        value = value[0] if len(value) else None
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _dicom_display_tags(path: Path) -> tuple[float, float, tuple[float, float] | None]:
    """``(slope, intercept, VOI window or None)`` from the header of the (first) DICOM file."""
    import pydicom

    tags = ["RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth", "PhotometricInterpretation"]
    ds = pydicom.dcmread(_first_dicom_file(path), stop_before_pixels=True, specific_tags=tags)
    slope = _first_number(ds.get("RescaleSlope")) or 1.0
    intercept = _first_number(ds.get("RescaleIntercept")) or 0.0
    center, width = _first_number(ds.get("WindowCenter")), _first_number(ds.get("WindowWidth"))
    voi = None
    if center is not None and width is not None and width > 0 and ds.get("PhotometricInterpretation") != "MONOCHROME1":
        voi = (center, width)
    return slope, intercept, voi


def _range_window(values: np.ndarray) -> tuple[float, float]:
    lo, hi = float(values.min()), float(values.max())
    if lo >= 0.0 and hi <= 255.0 and np.all(values == np.round(values)):
        return 127.5, 255.0  # 8-bit data as stored: 0 -> black, 255 -> white
    return (lo + hi) / 2.0, max(hi - lo, 1e-6)


def load_display_image(path: str | os.PathLike) -> DisplayImage:
    """Read an image for display (see the module docstring for units and the default window).

    Raises:
        FileNotFoundError, ValueError: from the loader, naming the file.
    """
    path = Path(path)
    values = load_image_2d(path, rescale=False)[0].numpy().astype(np.float32)
    voi = None
    if is_dicom_path(path):
        slope, intercept, voi = _dicom_display_tags(path)
        values = values * np.float32(slope) + np.float32(intercept)
    return DisplayImage(values, voi if voi is not None else _range_window(values))


def encode_png(array: np.ndarray, compress_level: int = 1) -> bytes:
    """In-memory PNG of a uint8 ``(H, W)`` array: IHDR, IDAT and IEND only (no metadata chunks).

    The study server sends images without writing files; :func:`monai_synth.data.write_png_uint8` is the writer of
    PNG *files*.
    """
    arr = np.asarray(array)
    if arr.dtype != np.uint8 or arr.ndim != 2:
        raise ValueError(f"encode_png takes a uint8 (H, W) array, got {arr.dtype} {arr.shape}.")
    buf = io.BytesIO()
    Image.fromarray(arr, mode="L").save(buf, format="PNG", compress_level=int(compress_level))
    return buf.getvalue()


def render_png(image: DisplayImage, window: tuple[float, float] | None = None) -> bytes:
    """The image under ``window`` (``(center, width)``; ``None``: its default window) as PNG bytes."""
    center, width = window if window is not None else image.default_window
    shown = hu_window(torch.from_numpy(image.values), center, width).numpy()
    return encode_png(to_uint8(shown))


class DisplayImageCache:
    """A thread-safe least-recently-used cache of :class:`DisplayImage` by item id (loading is the slow part).

    Args:
        max_items: images kept (a 4000 x 3000 mammogram takes 48 MB as float32).
    """

    def __init__(self, max_items: int = 16) -> None:
        if int(max_items) < 1:
            raise ValueError(f"`max_items` must be >= 1, got {max_items!r}.")
        self.max_items = int(max_items)
        self._items: OrderedDict[int, DisplayImage] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, item_id: int, path: str | os.PathLike) -> DisplayImage:
        """The display image of ``item_id``, loaded from ``path`` on a miss."""
        with self._lock:
            if item_id in self._items:
                self._items.move_to_end(item_id)
                return self._items[item_id]
        image = load_display_image(path)
        with self._lock:
            self._items[item_id] = image
            self._items.move_to_end(item_id)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
        return image
