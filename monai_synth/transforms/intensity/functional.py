"""Pure functions behind the intensity transforms: HU conversion, CT windowing, mammogram patch preparation.

The transform classes in :mod:`monai_synth.transforms.intensity.array` only convert types and call these.
Spatial arguments (``patch_shape``, ``image_shape``, ``center``) are spatial only, without the channel axis.

References:
    Seed 001: "multi-condition ILVR guidance for lung CT and mammography", section 2.2, Fig. 1b and Eq. 5.
    Radiopaedia, "Windowing (CT)", https://radiopaedia.org/articles/windowing-ct (window presets).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.utils import convert_to_tensor

from monai_synth.utils.enums import WindowPreset

__all__ = [
    "RESCALE_APPLIED_KEY",
    "RESCALE_INTERCEPT_KEYS",
    "RESCALE_SLOPE_KEYS",
    "WINDOW_PRESETS",
    "PlacedPatch",
    "gaussian_weight",
    "histogram_equalize",
    "hu_window",
    "patch_box",
    "patch_weight_map",
    "place_patch",
    "quantile_normalize_to_reference",
    "rescale_from_meta",
    "resolve_window",
    "scale_to_hu",
    "validate_output_range",
    "window_bounds",
]

#: Meta key: ``True`` once pixel values are ``stored * slope + intercept`` (HU for CT). Set by ``ScaleToHU`` on its
#: output and by ``monai_synth.data.ClinicalDicomReader`` (``False`` for its default stored values), so that
#: ``ScaleToHU`` never applies the rescale twice.
RESCALE_APPLIED_KEY = "rescale_applied"
#: Meta keys searched, in order, for the DICOM Rescale Slope (0028,1053).
RESCALE_SLOPE_KEYS = ("RescaleSlope", "00281053")
#: Meta keys searched, in order, for the DICOM Rescale Intercept (0028,1052).
RESCALE_INTERCEPT_KEYS = ("RescaleIntercept", "00281052")

#: CT display windows as (level, width) in HU. Source: Radiopaedia, "Windowing (CT)"
#: (https://radiopaedia.org/articles/windowing-ct): brain W80 L40; lungs W1500 L-600; mediastinum W350 L50;
#: bone W1800 L400; soft tissue W350-400 L20-60 (we use W400 L40, the common abdominal soft-tissue window).
WINDOW_PRESETS: dict[WindowPreset, tuple[float, float]] = {
    WindowPreset.LUNG: (-600.0, 1500.0),
    WindowPreset.BONE: (400.0, 1800.0),
    WindowPreset.SOFT_TISSUE: (40.0, 400.0),
    WindowPreset.MEDIASTINUM: (50.0, 350.0),
    WindowPreset.BRAIN: (40.0, 80.0),
}
_PRESET_ALIASES = {"soft tissue": WindowPreset.SOFT_TISSUE, "soft-tissue": WindowPreset.SOFT_TISSUE}


# --------------------------------------------------------------------------------------------- HU and windows
def _meta_number(value: Any) -> float:
    """A number from a meta value: plain number, string, 1-element sequence, or pydicom JSON ``{"Value": [x]}``."""
    if isinstance(value, Mapping):
        value = value.get("Value")
    if isinstance(value, (list, tuple, np.ndarray, torch.Tensor)):
        value = list(np.asarray(value).reshape(-1))
        if len(value) != 1:
            raise ValueError(f"expected a single rescale value in the image metadata, got {value!r}.")
        value = value[0]
    return float(value)


def rescale_from_meta(meta: Mapping | None) -> tuple[float | None, float | None]:
    """Read DICOM Rescale Slope / Intercept from image metadata.

    Accepts the keyword names (``"RescaleSlope"``, ``"RescaleIntercept"``) and the tag keys that MONAI's
    ``PydicomReader`` uses (``"00281053"``, ``"00281052"``, whose values are pydicom JSON dicts
    ``{"vr": "DS", "Value": [x]}``).

    Returns:
        ``(slope, intercept)``, each ``None`` when absent.
    """
    meta = meta or {}
    found: list[float | None] = []
    for keys in (RESCALE_SLOPE_KEYS, RESCALE_INTERCEPT_KEYS):
        key = next((k for k in keys if k in meta and meta[k] is not None), None)
        found.append(None if key is None else _meta_number(meta[key]))
    return found[0], found[1]


def scale_to_hu(img: torch.Tensor, slope: float, intercept: float) -> torch.Tensor:
    """Hounsfield units from stored CT values (DICOM PS3.3 C.11.1.1.2): ``HU = stored * slope + intercept``."""
    return img.to(torch.float32) * float(slope) + float(intercept)


def resolve_window(
    window: str | WindowPreset | None = None, level: float | None = None, width: float | None = None
) -> tuple[float, float]:
    """Turn a preset name or a custom ``level``/``width`` into a validated ``(level, width)`` pair.

    Raises:
        ValueError: unknown preset, both/neither of preset and level/width given, or ``width <= 0``.
    """
    if window is not None:
        if level is not None or width is not None:
            raise ValueError(f"give either `window` ({window!r}) or `level`/`width`, not both.")
        key = str(window).strip().lower()
        key = _PRESET_ALIASES.get(key, key)
        allowed = sorted(p.value for p in WindowPreset)
        if key not in allowed:
            raise ValueError(f"`window` must be one of {allowed} (or 'soft tissue'), got {window!r}.")
        level, width = WINDOW_PRESETS[WindowPreset(key)]
    elif level is None or width is None:
        raise ValueError(
            f"give a `window` preset (one of {sorted(p.value for p in WindowPreset)}) or both `level` and `width`; "
            f"got level={level!r}, width={width!r}."
        )
    level, width = float(level), float(width)
    if not math.isfinite(level):
        raise ValueError(f"`level` must be finite, got {level!r}.")
    if not (math.isfinite(width) and width > 0):
        raise ValueError(f"`width` must be a finite number > 0 HU, got {width!r}.")
    return level, width


def window_bounds(level: float, width: float) -> tuple[float, float]:
    """The HU interval ``[level - width/2, level + width/2]`` shown by a window (lung: ``[-1350, 150]``)."""
    return level - width / 2.0, level + width / 2.0


def validate_output_range(output_range: Sequence[float]) -> tuple[float, float]:
    """Check an ``(low, high)`` output range, e.g. ``(0, 1)`` or ``(-1, 1)``; ``low < high``, both finite."""
    values = tuple(float(v) for v in output_range)
    if len(values) != 2 or not all(math.isfinite(v) for v in values) or values[0] >= values[1]:
        raise ValueError(
            f"`output_range` must be two finite numbers (low, high) with low < high, got {output_range!r}."
        )
    return values[0], values[1]


def hu_window(
    img: torch.Tensor,
    level: float,
    width: float,
    output_range: Sequence[float] = (0.0, 1.0),
    clip: bool = True,
) -> torch.Tensor:
    """Linear CT window: ``[level - width/2, level + width/2]`` HU -> ``output_range``.

    ``y = low + (high - low) * (HU - (level - width/2)) / width``, clipped to ``output_range`` when ``clip``.
    (Simple linear form; DICOM PS3.3 C.11.2.1.2's "-0.5" variant differs by under 1 HU.)
    """
    low, high = validate_output_range(output_range)
    hu_low, _ = window_bounds(level, width)
    t = (img.to(torch.float32) - hu_low) / width
    if clip:
        t = t.clamp(0.0, 1.0)
    return low + (high - low) * t


# ------------------------------------------------------------------------------------ mammogram patch helpers
def histogram_equalize(
    img: np.ndarray,
    num_bins: int = 256,
    mask: np.ndarray | None = None,
    output_range: Sequence[float] = (0.0, 1.0),
) -> np.ndarray:
    """Histogram equalization via the cumulative histogram (seed 001, Fig. 1b, first step).

    Textbook form (Gonzalez & Woods, "Digital Image Processing", 3.3.1): with ``num_bins`` equal-width bins over
    ``[min, max]`` of the (masked) pixels, cumulative counts ``cdf`` and ``cdf_min`` the count of the first
    non-empty bin, a pixel in bin ``k`` maps to ``(cdf[k] - cdf_min) / (N - cdf_min)``, rescaled to
    ``output_range``. An integer image with at most ``num_bins`` levels is equalized exactly, level by level.

    Args:
        img: image (any shape).
        num_bins: number of histogram bins (>= 1).
        mask: optional mask (same shape, bool/0-1); only masked pixels build the histogram, all pixels are mapped.
        output_range: ``(low, high)`` of the result.

    Returns:
        float64 array of ``img``'s shape in ``output_range``; a constant image maps to ``low``.
    """
    low, high = validate_output_range(output_range)
    x = np.asarray(img, dtype=np.float64)
    sample = x if mask is None else x[np.asarray(mask, dtype=bool)]
    if sample.size == 0:
        raise ValueError("histogram_equalize: the mask selects no pixels; give a mask with at least one True pixel.")
    if sample.min() == sample.max():  # constant: np.histogram_bin_edges fails for |value| > 2**50
        return np.full_like(x, low)
    edges = np.histogram_bin_edges(sample, bins=num_bins)
    counts, _ = np.histogram(sample, bins=edges)
    cdf = np.cumsum(counts)
    # np.histogram puts max into the last bin; out-of-range pixels (outside the mask's range) go to the end bins.
    k = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, num_bins - 1)
    cdf_min = cdf[np.flatnonzero(counts)[0]]
    denom = cdf[-1] - cdf_min
    if denom == 0:
        return np.full_like(x, low)
    t = np.clip((cdf[k] - cdf_min) / denom, 0.0, 1.0)
    return low + (high - low) * t


def quantile_normalize_to_reference(patch: np.ndarray, reference: np.ndarray, q: float) -> np.ndarray:
    """Map a patch linearly onto the reference's ``[min, quantile_q]`` (seed 001, section 2.2, Fig. 1b).

    ``patch.min() -> reference.min()`` and ``patch.max() -> np.quantile(reference, q)`` exactly (written as
    ``(1 - t) * ref_min + t * ref_q`` with ``t = (p - p_min) / (p_max - p_min)``). A constant patch maps to
    ``ref_min``. Quantile method: numpy's default ``"linear"``.

    Returns:
        float64 array of ``patch``'s shape.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"`q` must be in [0, 1], got {q!r}.")
    p = np.asarray(patch, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    if ref.size == 0 or p.size == 0:
        raise ValueError("quantile_normalize_to_reference: `patch` and `reference` must be non-empty.")
    ref_min, ref_q = float(ref.min()), float(np.quantile(ref, q))
    p_min, p_max = float(p.min()), float(p.max())
    span = p_max - p_min
    if span == 0 or not math.isfinite(span):
        t = np.zeros_like(p)
    else:
        t = (p - p_min) / span
    return (1.0 - t) * ref_min + t * ref_q


def gaussian_weight(
    patch_shape: Sequence[int],
    sigma_factor: float = 0.2,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Spherical Gaussian over a patch, 1 at its centre (seed 001, section 2.2 and Eq. 5).

    ``w(x) = exp(-|x - c|^2 / (2 sigma^2))`` with ``c = (patch_shape - 1) / 2`` (pixel-index centre) and one
    ``sigma = sigma_factor * min(patch_shape)`` for every axis. With the default 0.2 the weight is
    ``exp(-3.125) ~= 0.044`` at the middle of an edge of a square patch.

    Returns:
        tensor of shape ``patch_shape``.
    """
    shape = tuple(int(s) for s in patch_shape)
    if not shape or min(shape) < 1:
        raise ValueError(f"`patch_shape` must be non-empty with sizes >= 1, got {patch_shape!r}.")
    if not (math.isfinite(sigma_factor) and sigma_factor > 0):
        raise ValueError(f"`sigma_factor` must be a finite number > 0, got {sigma_factor!r}.")
    sigma = sigma_factor * min(shape)
    sq = torch.zeros(shape, device=device, dtype=torch.float64)
    for axis, n in enumerate(shape):
        d = torch.arange(n, device=device, dtype=torch.float64) - (n - 1) / 2.0
        view = [1] * len(shape)
        view[axis] = n
        sq = sq + (d**2).reshape(view)
    return torch.exp(-sq / (2.0 * sigma**2)).to(dtype)


def patch_box(
    patch_shape: Sequence[int], image_shape: Sequence[int], center: Sequence[int]
) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Where a patch lands in an image: ``(image_slices, patch_slices)``, cropped at the image border.

    The patch occupies ``[center - p // 2, center - p // 2 + p)`` on each axis.

    Raises:
        ValueError: mismatched dimensions, or the patch lies entirely outside the image.
    """
    if not (len(patch_shape) == len(image_shape) == len(center)):
        raise ValueError(
            f"`patch_shape` {tuple(patch_shape)}, `image_shape` {tuple(image_shape)} and `center` {tuple(center)} "
            "must have the same number of spatial dimensions."
        )
    img_sl, patch_sl = [], []
    for p, n, c in zip(patch_shape, image_shape, center, strict=True):
        start = int(c) - int(p) // 2
        lo, hi = max(start, 0), min(start + int(p), int(n))
        if lo >= hi:
            raise ValueError(
                f"patch of shape {tuple(patch_shape)} centred at {tuple(center)} lies outside the image of shape "
                f"{tuple(image_shape)}; choose a centre inside the image."
            )
        img_sl.append(slice(lo, hi))
        patch_sl.append(slice(lo - start, hi - start))
    return tuple(img_sl), tuple(patch_sl)


def patch_weight_map(
    image_shape: Sequence[int],
    patch_shape: Sequence[int],
    center: Sequence[int] | None = None,
    sigma_factor: float = 0.2,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Weight matrix ``W`` of seed 001, Eq. 5: zero outside the patch box, ``gaussian_weight`` inside.

    Args:
        image_shape: spatial shape of the full image (and of ``W``).
        patch_shape: spatial shape of the patch.
        center: patch centre index in the image; default the image centre (``n // 2`` per axis).
        sigma_factor: see :func:`gaussian_weight`.

    Returns:
        float32 tensor of shape ``image_shape``.
    """
    center = tuple(int(n) // 2 for n in image_shape) if center is None else tuple(center)
    img_sl, patch_sl = patch_box(patch_shape, image_shape, center)
    w = torch.zeros(tuple(int(n) for n in image_shape), dtype=torch.float32, device=device)
    w[img_sl] = gaussian_weight(patch_shape, sigma_factor, device=device)[patch_sl]
    return w


class PlacedPatch(NamedTuple):
    """A patch pasted into a full-size canvas, and the matching Eq. 5 weight map."""

    canvas: torch.Tensor  #: ``(C, *image_shape)``: the patch inside its box, ``fill`` elsewhere
    weight: torch.Tensor  #: ``(1, *image_shape)``: Gaussian inside the box, exactly 0 outside


def place_patch(
    patch: NdarrayOrTensor,
    image_shape: Sequence[int],
    center: Sequence[int] | None = None,
    sigma_factor: float = 0.2,
    fill: float = 0.0,
) -> PlacedPatch:
    """Paste a channel-first patch ``(C, *p)`` into a canvas of spatial shape ``image_shape`` at ``center``.

    Returns:
        :class:`PlacedPatch` ``(canvas, weight)`` as tensors (seed 001, Eq. 5: ``y`` and ``W``).
    """
    p = convert_to_tensor(patch, track_meta=False)
    if p.ndim != len(image_shape) + 1:
        raise ValueError(
            f"`patch` must be channel-first with {len(image_shape)} spatial dims to match `image_shape` "
            f"{tuple(image_shape)}, got shape {tuple(p.shape)}."
        )
    center = tuple(int(n) // 2 for n in image_shape) if center is None else tuple(center)
    img_sl, patch_sl = patch_box(p.shape[1:], image_shape, center)
    dtype = p.dtype if p.is_floating_point() else torch.float32
    canvas = torch.full((p.shape[0], *(int(n) for n in image_shape)), float(fill), dtype=dtype, device=p.device)
    canvas[(slice(None), *img_sl)] = p[(slice(None), *patch_sl)].to(dtype)
    weight = patch_weight_map(image_shape, p.shape[1:], center, sigma_factor, device=p.device)[None]
    return PlacedPatch(canvas, weight)
