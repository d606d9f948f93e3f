"""Networks MONAI lacks (ConvNeXt) and a small classifier factory over MONAI's ResNets and ConvNeXt presets."""

from __future__ import annotations

from .autoencoder import (
    build_autoencoder,
    build_patch_discriminator,
    decode_latents,
    default_autoencoder_channels,
    downsample_factor,
    encode_latents,
)
from .classifiers import CLASSIFIER_NAMES, build_classifier, load_classifier_weights
from .convnext import CONVNEXT_PRESETS, ConvNeXt, ConvNeXtBlock, LayerNormChannelsFirst, convnext
from .diffusion_unet import build_diffusion_unet
from .schedulers import SchedulerKind, build_scheduler, ddim_from
