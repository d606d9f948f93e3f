"""Transforms for medical image synthesis, re-exported flat like ``monai.transforms``.

``from monai_synth.transforms import HUWindowd, RandQuantileNormalizeToReference, ...``; see docs/transforms.md.
"""

from __future__ import annotations

from .intensity.array import (
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
from .intensity.dictionary import (
    GaussianEdgeWeightD,
    GaussianEdgeWeightd,
    GaussianEdgeWeightDict,
    HistogramEqualizeD,
    HistogramEqualized,
    HistogramEqualizeDict,
    HUWindowD,
    HUWindowd,
    HUWindowDict,
    MultiWindowD,
    MultiWindowd,
    MultiWindowDict,
    PatchWeightMapD,
    PatchWeightMapd,
    PatchWeightMapDict,
    PlacePatchD,
    PlacePatchd,
    PlacePatchDict,
    RandPatchAugmentD,
    RandPatchAugmentd,
    RandPatchAugmentDict,
    RandQuantileNormalizeToReferenceD,
    RandQuantileNormalizeToReferenced,
    RandQuantileNormalizeToReferenceDict,
    ScaleToHUD,
    ScaleToHUd,
    ScaleToHUDict,
)
from .intensity.functional import (
    RESCALE_APPLIED_KEY,
    RESCALE_INTERCEPT_KEYS,
    RESCALE_SLOPE_KEYS,
    WINDOW_PRESETS,
    PlacedPatch,
    gaussian_weight,
    histogram_equalize,
    hu_window,
    patch_box,
    patch_weight_map,
    place_patch,
    quantile_normalize_to_reference,
    rescale_from_meta,
    resolve_window,
    scale_to_hu,
    validate_output_range,
    window_bounds,
)
