"""The first stage of latent diffusion: MONAI's ``AutoencoderKL`` and ``PatchDiscriminator`` with our defaults.

Latent diffusion (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models") trains a
KL-regularised autoencoder ``x -> z -> x'`` first and the diffusion model on the scaled latents ``s * z``. Here the
encoder downsamples by ``2 ** (len(channels) - 1)``; :func:`default_autoencoder_channels` picks the levels so that a
128 px image gives a 32 px latent (factor 4) and 256 / 512 px images a 32 / 64 px latent (factor 8).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import AutoencoderKL, PatchDiscriminator

__all__ = [
    "build_autoencoder",
    "build_patch_discriminator",
    "default_autoencoder_channels",
    "downsample_factor",
    "encode_latents",
    "decode_latents",
    "latent_shape",
]


def default_autoencoder_channels(image_size: int) -> tuple[int, ...]:
    """Encoder channels per level for ``image_size``: factor 4 below 256 px, factor 8 from 256 px up."""
    return (16, 32, 64) if int(image_size) < 256 else (16, 32, 64, 64)


def downsample_factor(channels: Sequence[int]) -> int:
    """Spatial downsampling of an ``AutoencoderKL`` with these channels (one halving between levels)."""
    return 2 ** (len(tuple(channels)) - 1)


def latent_shape(autoencoder: AutoencoderKL, spatial: Sequence[int]) -> tuple[int, ...]:
    """``(latent_channels, *spatial // factor)`` of an ``AutoencoderKL`` for images of ``spatial`` size.

    Raises:
        ValueError: when a side is not divisible by the downsampling factor.
    """
    factor = downsample_factor(autoencoder.encoder.channels)
    if any(int(s) % factor for s in spatial):
        raise ValueError(f"image size {tuple(spatial)} is not divisible by the autoencoder's factor {factor}.")
    return (int(autoencoder.latent_channels), *(int(s) // factor for s in spatial))


def build_autoencoder(
    in_channels: int = 1,
    channels: Sequence[int] = (16, 32, 64),
    latent_channels: int = 3,
    num_res_blocks: int = 1,
    norm_num_groups: int = 16,
    attention: bool = False,
) -> AutoencoderKL:
    """MONAI's ``AutoencoderKL`` (2D, ``in_channels`` in and out) without attention by default (CPU cost).

    Args:
        in_channels: image channels.
        channels: channels per level (``len(channels) - 1`` downsamplings).
        latent_channels: channels of ``z``.
        num_res_blocks: residual blocks per level.
        norm_num_groups: GroupNorm groups (must divide every channel count).
        attention: self-attention at the deepest level and in the bottleneck.

    Raises:
        ValueError: for channel counts GroupNorm cannot split.
    """
    channels = tuple(int(c) for c in channels)
    if len(channels) < 2:
        raise ValueError(f"`channels` needs at least two levels (one downsampling), got {channels!r}.")
    bad = [c for c in channels if c % int(norm_num_groups)]
    if bad:
        raise ValueError(f"autoencoder channels {bad} are not divisible by norm_num_groups={norm_num_groups}.")
    levels = len(channels)
    return AutoencoderKL(
        spatial_dims=2,
        in_channels=int(in_channels),
        out_channels=int(in_channels),
        channels=channels,
        latent_channels=int(latent_channels),
        num_res_blocks=(int(num_res_blocks),) * levels,
        attention_levels=(False,) * (levels - 1) + (bool(attention),),
        norm_num_groups=int(norm_num_groups),
        with_encoder_nonlocal_attn=bool(attention),
        with_decoder_nonlocal_attn=bool(attention),
        include_fc=False,
    )


def build_patch_discriminator(in_channels: int = 1, channels: int = 32, num_layers_d: int = 3) -> PatchDiscriminator:
    """MONAI's ``PatchDiscriminator`` (PatchGAN, Isola et al. 2017) returning one logit map per image.

    Args:
        in_channels: image channels.
        channels: channels of the first layer (doubled per layer).
        num_layers_d: strided layers (receptive field grows with them).
    """
    return PatchDiscriminator(
        spatial_dims=2, channels=int(channels), in_channels=int(in_channels), out_channels=1,
        num_layers_d=int(num_layers_d), norm="INSTANCE",
    )  # fmt: skip


def encode_latents(
    autoencoder: AutoencoderKL, images: torch.Tensor, scale_factor: float = 1.0, batch_size: int = 64
) -> torch.Tensor:
    """``scale_factor * mu(x)`` for images in [-1, 1], in batches, without gradients.

    The posterior mean is used (not a draw): with the small KL weight of latent diffusion the posterior is narrow,
    and the mean makes the latent set deterministic.
    """
    device = next(autoencoder.parameters()).device
    out = []
    with torch.inference_mode():
        for start in range(0, images.shape[0], int(batch_size)):
            z_mu, _ = autoencoder.encode(images[start : start + int(batch_size)].to(device))
            out.append(z_mu * float(scale_factor))
    return torch.cat(out) if out else images.new_zeros((0,))


def decode_latents(
    autoencoder: AutoencoderKL, latents: torch.Tensor, scale_factor: float = 1.0, batch_size: int = 64
) -> torch.Tensor:
    """Images ``D(z / scale_factor)`` of scaled latents, decoded in batches of ``batch_size`` without gradients."""
    device = next(autoencoder.parameters()).device
    out = []
    with torch.inference_mode():
        for start in range(0, latents.shape[0], int(batch_size)):
            z = latents[start : start + int(batch_size)].to(device) / float(scale_factor)
            out.append(autoencoder.decode_stage_2_outputs(z))
    return torch.cat(out)
