"""Dictionary wrappers of :mod:`monai_synth.transforms.intensity.array`.

Each wrapper loops over ``keys`` and delegates to the array transform. Random wrappers draw once per call
and apply the same draw to every key.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import DtypeLike, KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, RandomizableTransform

from monai_synth.utils.enums import PatchRotation, WindowPreset

from .array import (
    GaussianEdgeWeight,
    HistogramEqualize,
    HUWindow,
    MultiWindow,
    PatchWeightMap,
    PlacePatch,
    RandPatchAugment,
    RandQuantileNormalizeToReference,
    ScaleToHU,
)

__all__ = [
    "GaussianEdgeWeightD",
    "GaussianEdgeWeightDict",
    "GaussianEdgeWeightd",
    "HUWindowD",
    "HUWindowDict",
    "HUWindowd",
    "HistogramEqualizeD",
    "HistogramEqualizeDict",
    "HistogramEqualized",
    "MultiWindowD",
    "MultiWindowDict",
    "MultiWindowd",
    "PatchWeightMapD",
    "PatchWeightMapDict",
    "PatchWeightMapd",
    "PlacePatchD",
    "PlacePatchDict",
    "PlacePatchd",
    "RandPatchAugmentD",
    "RandPatchAugmentDict",
    "RandPatchAugmentd",
    "RandQuantileNormalizeToReferenceD",
    "RandQuantileNormalizeToReferenceDict",
    "RandQuantileNormalizeToReferenced",
    "ScaleToHUD",
    "ScaleToHUDict",
    "ScaleToHUd",
]


class _RandomDelegate(RandomizableTransform):
    """A random dictionary wrapper whose array transform ``self.transform`` shares the wrapper's random state."""

    transform: RandomizableTransform

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> _RandomDelegate:
        super().set_random_state(seed, state)
        self.transform.set_random_state(state=self.R)
        return self


class _Delegate(MapTransform):
    """Apply ``self.transform`` to every key."""

    transform: object

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d


class ScaleToHUd(_Delegate):
    """Dictionary version of :class:`~monai_synth.transforms.intensity.array.ScaleToHU`."""

    backend = ScaleToHU.backend

    def __init__(
        self,
        keys: KeysCollection,
        slope: float | None = None,
        intercept: float | None = None,
        already_rescaled: bool | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = ScaleToHU(slope, intercept, already_rescaled)


class HUWindowd(_Delegate):
    """Dictionary version of :class:`~monai_synth.transforms.intensity.array.HUWindow`."""

    backend = HUWindow.backend

    def __init__(
        self,
        keys: KeysCollection,
        window: str | WindowPreset | None = None,
        level: float | None = None,
        width: float | None = None,
        output_range: Sequence[float] = (0.0, 1.0),
        clip: bool = True,
        dtype: DtypeLike | torch.dtype = torch.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = HUWindow(window, level, width, output_range, clip, dtype)


class MultiWindowd(_Delegate):
    """Dictionary version of :class:`~monai_synth.transforms.intensity.array.MultiWindow`."""

    backend = MultiWindow.backend

    def __init__(
        self,
        keys: KeysCollection,
        windows: Sequence[str | WindowPreset | Sequence[float]] = ("bone", "lung", "soft_tissue"),
        output_range: Sequence[float] = (0.0, 1.0),
        clip: bool = True,
        dtype: DtypeLike | torch.dtype = torch.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = MultiWindow(windows, output_range, clip, dtype)


class HistogramEqualized(MapTransform):
    """Dictionary version of :class:`~monai_synth.transforms.intensity.array.HistogramEqualize`.

    Args:
        mask_key: optional key of a mask in the data dict (pixels that build the histogram).
    """

    backend = HistogramEqualize.backend

    def __init__(
        self,
        keys: KeysCollection,
        num_bins: int = 256,
        output_range: Sequence[float] = (0.0, 1.0),
        mask_key: str | None = None,
        dtype: DtypeLike | torch.dtype = np.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = HistogramEqualize(num_bins, output_range, dtype=dtype)
        self.mask_key = mask_key

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        mask = d[self.mask_key] if self.mask_key is not None else None
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key], mask=mask)
        return d


class RandQuantileNormalizeToReferenced(_RandomDelegate, MapTransform):
    """Dictionary version of :class:`~monai_synth.transforms.intensity.array.RandQuantileNormalizeToReference`.

    One ``q`` is drawn per call and used for every key.

    Args:
        ref_key: key of the reference image in the data dict.
        q_range: ``(low, high)`` with ``0 <= low <= high <= 1``.
    """

    backend = RandQuantileNormalizeToReference.backend

    def __init__(
        self,
        keys: KeysCollection,
        ref_key: str,
        q_range: Sequence[float] = (0.975, 0.995),
        dtype: DtypeLike | torch.dtype = np.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob=1.0)
        self.ref_key = ref_key
        self.transform = RandQuantileNormalizeToReference(q_range=q_range, dtype=dtype)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        if self.ref_key not in d:
            raise ValueError(f"`ref_key` {self.ref_key!r} is not in the data dict (keys: {sorted(map(str, d))}).")
        self.transform.set_random_state(state=self.R)
        self.transform.randomize()
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key], reference=d[self.ref_key], randomize=False)
        return d


class GaussianEdgeWeightd(_Delegate):
    """Dictionary version of :class:`~monai_synth.transforms.intensity.array.GaussianEdgeWeight`."""

    backend = GaussianEdgeWeight.backend

    def __init__(self, keys: KeysCollection, sigma_factor: float = 0.2, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = GaussianEdgeWeight(sigma_factor)


class PatchWeightMapd(MapTransform):
    """Dictionary version of :class:`~monai_synth.transforms.intensity.array.PatchWeightMap`.

    Writes the weight map of ``d[key]`` to ``d[f"{key}_{weight_key_postfix}"]``; ``d[key]`` is unchanged.
    """

    backend = PatchWeightMap.backend

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: Sequence[int],
        center: Sequence[int] | None = None,
        sigma_factor: float = 0.2,
        weight_key_postfix: str = "weight",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = PatchWeightMap(spatial_size, center, sigma_factor)
        self.weight_key_postfix = weight_key_postfix

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[f"{key}_{self.weight_key_postfix}"] = self.transform(d[key])
        return d


class PlacePatchd(_Delegate):
    """Dictionary version of :class:`~monai_synth.transforms.intensity.array.PlacePatch` (replaces the patch)."""

    backend = PlacePatch.backend

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: Sequence[int],
        center: Sequence[int] | None = None,
        fill: float = 0.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = PlacePatch(spatial_size, center, fill)


class RandPatchAugmentd(_RandomDelegate, MapTransform):
    """Dictionary version of :class:`~monai_synth.transforms.intensity.array.RandPatchAugment`.

    One draw (angle, shift, flips) per call, applied to every key (e.g. a patch and its mask).
    """

    backend = RandPatchAugment.backend

    def __init__(
        self,
        keys: KeysCollection,
        spatial_dims: int = 2,
        rotation: str | PatchRotation = PatchRotation.ANY,
        rotate_range: float = math.pi,
        translate_range: float | Sequence[float] = 0.0,
        flip_prob: float = 0.5,
        prob: float = 1.0,
        mode: str = "bilinear",
        padding_mode: str = "zeros",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob=1.0)
        self.transform = RandPatchAugment(
            spatial_dims, rotation, rotate_range, translate_range, flip_prob, prob, mode, padding_mode
        )

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        self.transform.set_random_state(state=self.R)
        self.transform.randomize()
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key], randomize=False)
        return d


ScaleToHUD = ScaleToHUDict = ScaleToHUd
HUWindowD = HUWindowDict = HUWindowd
MultiWindowD = MultiWindowDict = MultiWindowd
HistogramEqualizeD = HistogramEqualizeDict = HistogramEqualized
RandQuantileNormalizeToReferenceD = RandQuantileNormalizeToReferenceDict = RandQuantileNormalizeToReferenced
GaussianEdgeWeightD = GaussianEdgeWeightDict = GaussianEdgeWeightd
PatchWeightMapD = PatchWeightMapDict = PatchWeightMapd
PlacePatchD = PlacePatchDict = PlacePatchd
RandPatchAugmentD = RandPatchAugmentDict = RandPatchAugmentd
