"""The latent-diffusion first stage: AutoencoderKL/PatchDiscriminator builders and batched latent coding."""

from __future__ import annotations

import pytest
import torch

from monai_synth.networks import (
    build_autoencoder,
    build_patch_discriminator,
    decode_latents,
    default_autoencoder_channels,
    downsample_factor,
    encode_latents,
)
from monai_synth.networks.autoencoder import latent_shape


def _tiny(**kw):
    torch.manual_seed(0)
    return build_autoencoder(channels=(8, 8), latent_channels=2, norm_num_groups=4, **kw).eval()


def test_default_levels_give_32px_latents_at_128_and_256():
    for size, latent in ((128, 32), (256, 32), (512, 64)):
        assert size // downsample_factor(default_autoencoder_channels(size)) == latent


def test_shapes_and_latent_shape():
    ae = _tiny()
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    recon, mu, sigma = ae(x)
    assert recon.shape == x.shape and mu.shape == (3, 2, 8, 8) and (sigma > 0).all()
    assert latent_shape(ae, (16, 24)) == (2, 8, 12)
    with pytest.raises(ValueError, match="not divisible by the autoencoder's factor 2"):
        latent_shape(ae, (15, 16))


def test_bad_channels_are_refused():
    with pytest.raises(ValueError, match="not divisible by norm_num_groups=32"):
        build_autoencoder(channels=(16, 32), norm_num_groups=32)
    with pytest.raises(ValueError, match="at least two levels"):
        build_autoencoder(channels=(32,), norm_num_groups=32)


def test_batched_coding_matches_one_pass():
    ae = _tiny()
    x = torch.rand(5, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        mu, _ = ae.encode(x)
        whole = ae.decode(mu / 0.5 * 0.5)
    z = encode_latents(ae, x, scale_factor=0.5, batch_size=2)
    torch.testing.assert_close(z, mu * 0.5, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(decode_latents(ae, z, scale_factor=0.5, batch_size=3), whole, rtol=1e-4, atol=1e-5)


def test_patch_discriminator_gives_a_logit_map():
    d = build_patch_discriminator(in_channels=1, channels=8, num_layers_d=2)
    out = d(torch.rand(2, 1, 32, 32))
    assert out[-1].shape[:2] == (2, 1) and out[-1].shape[-1] > 1
