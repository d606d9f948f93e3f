"""Inferers: class-conditioned diffusion (classifier-free guidance) and the shared guided sampling loop."""

from __future__ import annotations

from .class_conditioned import ClassConditionedDiffusionInferer, drop_class_labels
from .guidance import ANATOMY_WEIGHTINGS, Condition, MultiConditionGuidance, anatomy_pathology_guidance, ilvr_guidance
from .latent import ClassConditionedLatentDiffusionInferer, LatentLowPassGuidance
from .lowpass import LowPassFilter, lowpass_filter
from .sampling import (
    GuidanceStrategy,
    PredictionGuidance,
    add_noise_to_timestep,
    classifier_free_guidance,
    clip_model_output,
    is_flow,
    output_from_x0,
    predicted_x0,
    previous_timestep,
    resolve_null_class,
    sample,
)
