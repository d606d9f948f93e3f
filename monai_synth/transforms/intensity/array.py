"""Array intensity transforms: HU conversion and CT windows; mammogram pathology patch preparation (seed 001).

Every transform returns the input's type: numpy in -> numpy out, ``torch.Tensor`` -> ``torch.Tensor``,
``MetaTensor`` -> ``MetaTensor`` with its metadata kept. Images are channel-first ``(C, *spatial)``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from monai.config import DtypeLike, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import RandAffine, RandFlip, RandomizableTransform, RandRotate90, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor, ensure_tuple_rep

from monai_synth.utils.enums import PatchRotation, WindowPreset

from .functional import (
    RESCALE_APPLIED_KEY,
    RESCALE_INTERCEPT_KEYS,
    RESCALE_SLOPE_KEYS,
    gaussian_weight,
    histogram_equalize,
    hu_window,
    patch_weight_map,
    place_patch,
    quantile_normalize_to_reference,
    rescale_from_meta,
    resolve_window,
    scale_to_hu,
    validate_output_range,
)

__all__ = [
    "GaussianEdgeWeight",
    "HUWindow",
    "HistogramEqualize",
    "MultiWindow",
    "PatchWeightMap",
    "PlacePatch",
    "RandPatchAugment",
    "RandQuantileNormalizeToReference",
    "ScaleToHU",
]

logger = logging.getLogger(__name__)


def _with_meta_flag(out: NdarrayOrTensor, key: str, value: object) -> NdarrayOrTensor:
    """Set ``out.meta[key]`` on a MetaTensor without mutating a dict shared with the input."""
    if isinstance(out, MetaTensor):
        out.meta = {**out.meta, key: value}
    return out


def _check_finite(name: str, value: float | None) -> float | None:
    if value is not None and not math.isfinite(float(value)):
        raise ValueError(f"`{name}` must be a finite number or None, got {value!r}.")
    return None if value is None else float(value)


def _is_monai_pydicom_meta(meta: Mapping) -> bool:
    """MONAI's ``PydicomReader`` stores tags as pydicom JSON dicts (``{"vr": ..., "Value": ...}``)."""
    return any(isinstance(v, Mapping) and "vr" in v for v in meta.values())


class ScaleToHU(Transform):
    """Convert stored CT values to Hounsfield units: ``HU = stored * RescaleSlope + RescaleIntercept``.

    Slope and intercept come from the explicit arguments, else from the image's MetaTensor meta under
    ``"RescaleSlope"``/``"RescaleIntercept"`` or the DICOM tag keys ``"00281053"``/``"00281052"``.

    Never applied twice. With ``already_rescaled=None`` (auto) the transform returns the image unchanged when

    * ``meta["rescale_applied"]`` is ``True`` (set by this transform, and by ``monai_synth.data.ClinicalDicomReader``
      when it rescaled; its default output has ``False`` plus the slope/intercept, so it is converted here), or
    * the meta comes from MONAI's ``PydicomReader`` (tags stored as pydicom JSON dicts): in MONAI 1.6.1 that
      reader *always* applies RescaleSlope/Intercept when loading (``PydicomReader._get_array_data``), so its
      output is already in HU. (With its default ``prune_metadata=True`` the rescale tags are not even kept.)

    ``meta["rescale_applied"] = False`` forces conversion. The output meta gets ``"rescale_applied": True``.

    Args:
        slope: Rescale Slope to use instead of the metadata.
        intercept: Rescale Intercept to use instead of the metadata.
        already_rescaled: ``None`` = detect as above; ``True`` = pass through; ``False`` = always convert.

    Raises:
        ValueError: (on call) conversion is needed but slope/intercept are neither in the meta nor given.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self, slope: float | None = None, intercept: float | None = None, already_rescaled: bool | None = None
    ) -> None:
        self.slope = _check_finite("slope", slope)
        self.intercept = _check_finite("intercept", intercept)
        if already_rescaled not in (None, True, False):
            raise ValueError(f"`already_rescaled` must be one of [None, True, False], got {already_rescaled!r}.")
        self.already_rescaled = already_rescaled

    def needs_rescale(self, img: NdarrayOrTensor) -> bool:
        """Whether ``img`` still holds stored values (see the class docstring for the rule)."""
        if self.already_rescaled is not None:
            return not self.already_rescaled
        meta = img.meta if isinstance(img, MetaTensor) else {}
        flag = meta.get(RESCALE_APPLIED_KEY)
        if flag is not None:
            return not bool(flag)
        return not _is_monai_pydicom_meta(meta)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        if not self.needs_rescale(img):
            if isinstance(img, MetaTensor):
                img = MetaTensor(img.as_tensor(), meta=img.meta, applied_operations=img.applied_operations)
            return _with_meta_flag(img, RESCALE_APPLIED_KEY, True)
        meta_slope, meta_intercept = rescale_from_meta(img.meta if isinstance(img, MetaTensor) else None)
        slope = self.slope if self.slope is not None else meta_slope
        intercept = self.intercept if self.intercept is not None else meta_intercept
        if slope is None or intercept is None:
            pairs = ((RESCALE_SLOPE_KEYS, slope), (RESCALE_INTERCEPT_KEYS, intercept))
            missing = [f"{keys[0]} (tag {keys[1]})" for keys, value in pairs if value is None]
            raise ValueError(
                f"ScaleToHU: the image has no {' / '.join(missing)} in its metadata and none was given. "
                "Pass `slope=` and `intercept=` explicitly, load the image as a MetaTensor from a reader that "
                f"keeps these tags, or set meta['{RESCALE_APPLIED_KEY}']=True (or `already_rescaled=True`) if it is "
                "already in HU."
            )
        out_t = scale_to_hu(convert_to_tensor(img, track_meta=False), slope, intercept)
        out, *_ = convert_to_dst_type(out_t, img, dtype=torch.float32)
        return _with_meta_flag(out, RESCALE_APPLIED_KEY, True)


class HUWindow(Transform):
    """CT window: HU in ``[level - width/2, level + width/2]`` mapped linearly to ``output_range``.

    Presets (level, width in HU; Radiopaedia, "Windowing (CT)", https://radiopaedia.org/articles/windowing-ct):
    lung (-600, 1500) -> [-1350, 150]; bone (400, 1800) -> [-500, 1300]; soft_tissue (alias "soft tissue")
    (40, 400) -> [-160, 240]; mediastinum (50, 350) -> [-125, 225]; brain (40, 80) -> [0, 80].
    Seed 001 shows lung CT samples in bone, lung and soft-tissue windows.

    Args:
        window: preset name (a :class:`~monai_synth.utils.enums.WindowPreset` value), or ``None`` to use
            ``level``/``width``.
        level: custom window centre in HU.
        width: custom window width in HU (> 0).
        output_range: ``(low, high)`` of the output, e.g. ``(0, 1)`` or ``(-1, 1)``.
        clip: clip values outside the window to ``output_range``.
        dtype: output dtype.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        window: str | WindowPreset | None = None,
        level: float | None = None,
        width: float | None = None,
        output_range: Sequence[float] = (0.0, 1.0),
        clip: bool = True,
        dtype: DtypeLike | torch.dtype = torch.float32,
    ) -> None:
        self.level, self.width = resolve_window(window, level, width)
        self.output_range = validate_output_range(output_range)
        self.clip = clip
        self.dtype = dtype

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        out = hu_window(convert_to_tensor(img, track_meta=False), self.level, self.width, self.output_range, self.clip)
        result, *_ = convert_to_dst_type(out, img, dtype=self.dtype)
        return result


class MultiWindow(Transform):
    """Stack several CT windows as channels: ``(1, *spatial)`` HU -> ``(n_windows, *spatial)``.

    Args:
        windows: preset names and/or ``(level, width)`` pairs; default the bone, lung and soft-tissue windows
            that seed 001 shows its lung-CT samples in.
        output_range: ``(low, high)`` of every channel.
        clip: clip values outside each window.
        dtype: output dtype.
    """

    backend = HUWindow.backend

    def __init__(
        self,
        windows: Sequence[str | WindowPreset | Sequence[float]] = ("bone", "lung", "soft_tissue"),
        output_range: Sequence[float] = (0.0, 1.0),
        clip: bool = True,
        dtype: DtypeLike | torch.dtype = torch.float32,
    ) -> None:
        if isinstance(windows, str) or len(windows) == 0:
            raise ValueError(
                f"`windows` must be a non-empty sequence of presets or (level, width) pairs, got {windows!r}."
            )
        self.windows: list[tuple[float, float]] = []
        for w in windows:
            if isinstance(w, str):
                self.windows.append(resolve_window(w))
            elif isinstance(w, Sequence) and len(w) == 2:
                self.windows.append(resolve_window(None, w[0], w[1]))
            else:
                raise ValueError(f"each entry of `windows` must be a preset name or a (level, width) pair, got {w!r}.")
        self.output_range = validate_output_range(output_range)
        self.clip = clip
        self.dtype = dtype

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        x = convert_to_tensor(img, track_meta=False)
        if x.ndim < 2 or x.shape[0] != 1:
            raise ValueError(f"MultiWindow expects a single-channel image (1, *spatial), got shape {tuple(x.shape)}.")
        out = torch.cat([hu_window(x, lv, wd, self.output_range, self.clip) for lv, wd in self.windows], dim=0)
        result, *_ = convert_to_dst_type(out, img, dtype=self.dtype)
        return result


class HistogramEqualize(Transform):
    """Histogram equalization (seed 001, Fig. 1b, first step for the pathology patch).

    Uses :func:`~monai_synth.transforms.intensity.functional.histogram_equalize` (textbook CDF mapping over the
    whole array). ``monai.transforms.HistogramNormalize`` was checked first and not reused: it interpolates the
    CDF between bin centres (so levels are not mapped to their exact CDF value), ignores ``num_bins`` for integer
    images when scikit-image is installed, and returns a tensor for numpy input.

    Args:
        num_bins: number of histogram bins (>= 1).
        output_range: ``(low, high)`` of the output.
        mask: optional default mask (pixels that build the histogram); can also be given at call time.
        dtype: output dtype.
    """

    backend = [TransformBackends.NUMPY]

    def __init__(
        self,
        num_bins: int = 256,
        output_range: Sequence[float] = (0.0, 1.0),
        mask: NdarrayOrTensor | None = None,
        dtype: DtypeLike | torch.dtype = np.float32,
    ) -> None:
        if isinstance(num_bins, bool) or not isinstance(num_bins, (int, np.integer)) or num_bins < 1:
            raise ValueError(f"`num_bins` must be an integer >= 1, got {num_bins!r}.")
        self.num_bins = int(num_bins)
        self.output_range = validate_output_range(output_range)
        self.mask = mask
        self.dtype = dtype

    def __call__(self, img: NdarrayOrTensor, mask: NdarrayOrTensor | None = None) -> NdarrayOrTensor:
        mask = self.mask if mask is None else mask
        img_np = np.asarray(convert_to_tensor(img, track_meta=False).cpu())
        mask_np = None if mask is None else np.asarray(convert_to_tensor(mask, track_meta=False).cpu())
        if mask_np is not None and mask_np.shape != img_np.shape:
            raise ValueError(f"`mask` shape {mask_np.shape} must equal the image shape {img_np.shape}.")
        out = histogram_equalize(img_np, self.num_bins, mask_np, self.output_range)
        result, *_ = convert_to_dst_type(out, img, dtype=self.dtype)
        return result


class RandQuantileNormalizeToReference(RandomizableTransform):
    """Normalize a patch onto a reference's ``[min, quantile_q]``, ``q ~ U(q_range)`` (seed 001, section 2.2).

    Patch minimum -> reference minimum, patch maximum -> ``np.quantile(reference, q)``, linear in between.
    Seed 001 draws ``q`` uniformly in ``[0.975, 0.995]`` (the default ``q_range``).

    Args:
        reference: default reference image; may also be passed at call time.
        q_range: ``(low, high)`` with ``0 <= low <= high <= 1``.
        dtype: output dtype.
    """

    backend = [TransformBackends.NUMPY]

    def __init__(
        self,
        reference: NdarrayOrTensor | None = None,
        q_range: Sequence[float] = (0.975, 0.995),
        dtype: DtypeLike | torch.dtype = np.float32,
    ) -> None:
        RandomizableTransform.__init__(self, prob=1.0)
        q = tuple(float(v) for v in q_range)
        if len(q) != 2 or not (0.0 <= q[0] <= q[1] <= 1.0):
            raise ValueError(f"`q_range` must be (low, high) with 0 <= low <= high <= 1, got {q_range!r}.")
        self.q_range = q
        self.reference = reference
        self.dtype = dtype
        self.q: float = float(np.mean(q))

    def randomize(self, data: object = None) -> None:
        """Draw ``q ~ U(q_range)`` from ``self.R`` (the only draw: the transform is always applied)."""
        self._do_transform = True
        self.q = float(self.R.uniform(self.q_range[0], self.q_range[1]))

    def __call__(
        self, img: NdarrayOrTensor, reference: NdarrayOrTensor | None = None, randomize: bool = True
    ) -> NdarrayOrTensor:
        reference = self.reference if reference is None else reference
        if reference is None:
            raise ValueError(
                "RandQuantileNormalizeToReference needs a reference image: pass `reference=` to the constructor "
                "or to the call (dictionary version: `ref_key`)."
            )
        if randomize:
            self.randomize()
        img_np = np.asarray(convert_to_tensor(img, track_meta=False).cpu())
        ref_np = np.asarray(convert_to_tensor(reference, track_meta=False).cpu())
        out = quantile_normalize_to_reference(img_np, ref_np, self.q)
        result, *_ = convert_to_dst_type(out, img, dtype=self.dtype)
        return result


class GaussianEdgeWeight(Transform):
    """Multiply a patch by a spherical Gaussian centred on it, 1 at the centre (seed 001, Fig. 1b).

    ``w(x) = exp(-|x - c|^2 / (2 sigma^2))``, ``sigma = sigma_factor * min(spatial size)``; the default
    ``sigma_factor=0.2`` leaves ``exp(-3.125) ~= 0.044`` at the middle of each edge of a square patch, which
    removes the step between patch and reference image.

    Args:
        sigma_factor: Gaussian standard deviation as a fraction of the smallest patch side (> 0).
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, sigma_factor: float = 0.2) -> None:
        if not (math.isfinite(sigma_factor) and sigma_factor > 0):
            raise ValueError(f"`sigma_factor` must be a finite number > 0, got {sigma_factor!r}.")
        self.sigma_factor = float(sigma_factor)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        x = convert_to_tensor(img, track_meta=False)
        if x.ndim < 2:
            raise ValueError(f"GaussianEdgeWeight expects a channel-first patch (C, *spatial), got {tuple(x.shape)}.")
        w = gaussian_weight(x.shape[1:], self.sigma_factor, device=x.device)
        out = x.to(torch.float32) * w
        result, *_ = convert_to_dst_type(out, img, dtype=out.dtype)
        return result


class PatchWeightMap(Transform):
    """Weight map ``W`` of seed 001, Eq. 5 for a patch placed in a full image: ``(C, *p)`` -> ``(1, *spatial_size)``.

    Zero outside the patch box, the :class:`GaussianEdgeWeight` Gaussian inside.

    Args:
        spatial_size: spatial shape of the full image.
        center: patch centre index in the image (default the image centre); the box is
            ``[center - p // 2, center - p // 2 + p)``, cropped at the image border.
        sigma_factor: see :class:`GaussianEdgeWeight`.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self, spatial_size: Sequence[int], center: Sequence[int] | None = None, sigma_factor: float = 0.2
    ) -> None:
        self.spatial_size = tuple(int(s) for s in spatial_size)
        if not self.spatial_size or min(self.spatial_size) < 1:
            raise ValueError(f"`spatial_size` must be non-empty with sizes >= 1, got {spatial_size!r}.")
        if center is not None and len(center) != len(self.spatial_size):
            raise ValueError(f"`center` {center!r} must have {len(self.spatial_size)} entries like `spatial_size`.")
        GaussianEdgeWeight(sigma_factor)  # validates
        self.center = None if center is None else tuple(int(c) for c in center)
        self.sigma_factor = float(sigma_factor)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        x = convert_to_tensor(img, track_meta=False)
        if x.ndim != len(self.spatial_size) + 1:
            raise ValueError(
                f"patch must have shape (C, *p) with {len(self.spatial_size)} spatial dims, got {tuple(x.shape)}."
            )
        w = patch_weight_map(self.spatial_size, x.shape[1:], self.center, self.sigma_factor, device=x.device)[None]
        result, *_ = convert_to_dst_type(w, img, dtype=w.dtype)
        return result


class PlacePatch(PatchWeightMap):
    """Paste a patch ``(C, *p)`` into a ``fill``-valued canvas ``(C, *spatial_size)`` at ``center``.

    Same box as :class:`PatchWeightMap`; see :func:`~monai_synth.transforms.intensity.functional.place_patch`
    to get canvas and weight together.

    Args:
        spatial_size: spatial shape of the canvas.
        center: patch centre index in the canvas (default its centre).
        fill: canvas value outside the patch.
    """

    def __init__(self, spatial_size: Sequence[int], center: Sequence[int] | None = None, fill: float = 0.0) -> None:
        super().__init__(spatial_size, center)
        self.fill = float(fill)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        canvas = place_patch(img, self.spatial_size, self.center, fill=self.fill).canvas
        result, *_ = convert_to_dst_type(canvas, img, dtype=canvas.dtype)
        return result


class RandPatchAugment(RandomizableTransform):
    """Random rotation, translation and flips of a pathology patch (seed 001, section 3: "random augmentations
    to these patches during image generation (i.e. rotation, translation, and flipping)").

    Composes MONAI transforms, all drawing from this transform's ``self.R``: ``RandRotate90`` (``rotation=
    "right_angle"``: k in {0, 1, 2, 3} equally likely, in the first two spatial axes) or the rotation part of
    ``RandAffine`` (``rotation="any"``: angle ~ U(-rotate_range, rotate_range) per rotation axis), the translation
    part of ``RandAffine`` (uniform in ``+-translate_range`` pixels per axis), then one ``RandFlip`` per spatial
    axis with probability ``flip_prob``. Size is kept; areas moved in are ``padding_mode``-filled.

    Args:
        spatial_dims: 2 or 3.
        rotation: ``"any"`` or ``"right_angle"`` (:class:`~monai_synth.utils.enums.PatchRotation`).
        rotate_range: maximum absolute angle in radians for ``rotation="any"`` (default pi: any angle).
        translate_range: maximum absolute shift in pixels, one value or one per spatial axis (>= 0).
        flip_prob: probability of flipping each spatial axis, in [0, 1].
        prob: probability of augmenting at all.
        mode: interpolation of ``RandAffine``.
        padding_mode: padding of ``RandAffine``.
    """

    backend = RandAffine.backend

    def __init__(
        self,
        spatial_dims: int = 2,
        rotation: str | PatchRotation = PatchRotation.ANY,
        rotate_range: float = math.pi,
        translate_range: float | Sequence[float] = 0.0,
        flip_prob: float = 0.5,
        prob: float = 1.0,
        mode: str = "bilinear",
        padding_mode: str = "zeros",
    ) -> None:
        if spatial_dims not in (2, 3):
            raise ValueError(f"`spatial_dims` must be one of [2, 3], got {spatial_dims!r}.")
        allowed = sorted(r.value for r in PatchRotation)
        if str(rotation) not in allowed:
            raise ValueError(f"`rotation` must be one of {allowed}, got {rotation!r}.")
        if not (math.isfinite(rotate_range) and rotate_range >= 0):
            raise ValueError(f"`rotate_range` must be a finite angle >= 0 (radians), got {rotate_range!r}.")
        try:
            translate = tuple(float(t) for t in ensure_tuple_rep(translate_range, spatial_dims))
        except (TypeError, ValueError):
            translate = (-1.0,)
        if not all(math.isfinite(t) and t >= 0 for t in translate):
            raise ValueError(
                f"`translate_range` must be >= 0 pixels, one value or {spatial_dims} values, got {translate_range!r}."
            )
        for name, p in (("flip_prob", flip_prob), ("prob", prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"`{name}` must be in [0, 1], got {p!r}.")
        RandomizableTransform.__init__(self, prob=prob)
        self.rotation = PatchRotation(str(rotation))
        self.rot90 = RandRotate90(prob=0.75, max_k=3) if self.rotation == PatchRotation.RIGHT_ANGLE else None
        rotate = None
        if self.rotation == PatchRotation.ANY and rotate_range > 0:
            rotate = (rotate_range,) if spatial_dims == 2 else (rotate_range,) * 3
        self.affine = None
        if rotate is not None or any(t > 0 for t in translate):
            self.affine = RandAffine(
                prob=1.0, rotate_range=rotate, translate_range=translate, mode=mode, padding_mode=padding_mode
            )
        self.flips = [RandFlip(prob=flip_prob, spatial_axis=axis) for axis in range(spatial_dims)]
        self.set_random_state(state=self.R)

    def _parts(self) -> list[RandomizableTransform]:
        return [t for t in (self.rot90, self.affine, *self.flips) if t is not None]

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandPatchAugment:
        super().set_random_state(seed, state)
        for part in self._parts():
            part.set_random_state(state=self.R)
        return self

    def randomize(self, data: object = None) -> None:
        super().randomize(None)
        if not self._do_transform:
            return
        for part in self._parts():
            part.randomize(None)

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        if randomize:
            self.randomize()
        if not self._do_transform:
            return img
        out = img
        for part in self._parts():
            out = part(out, randomize=False)
        if isinstance(img, MetaTensor):
            return out
        result, *_ = convert_to_dst_type(out, img, dtype=out.dtype)
        return result
