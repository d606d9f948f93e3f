"""Inferers: class-conditioned diffusion (classifier-free guidance) and the shared guided sampling loop."""

from __future__ import annotations

from .class_conditioned import ClassConditionedDiffusionInferer, drop_class_labels
from .sampling import (
    GuidanceStrategy,
    add_noise_to_timestep,
    classifier_free_guidance,
    clip_model_output,
    previous_timestep,
    resolve_null_class,
    sample,
)

__all__ = [
    "ClassConditionedDiffusionInferer",
    "drop_class_labels",
    "GuidanceStrategy",
    "add_noise_to_timestep",
    "classifier_free_guidance",
    "clip_model_output",
    "previous_timestep",
    "resolve_null_class",
    "sample",
]
from .guidance import Condition, MultiConditionGuidance, anatomy_pathology_guidance, ilvr_guidance  # noqa: E402
from .lowpass import LowPassFilter, lowpass_filter  # noqa: E402

__all__ += [
    "Condition",
    "MultiConditionGuidance",
    "anatomy_pathology_guidance",
    "ilvr_guidance",
    "LowPassFilter",
    "lowpass_filter",
]
