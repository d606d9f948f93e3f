"""Class-conditional latent diffusion (MONAI's LatentDiffusionInferer extended) and latent ILVR guidance."""

from __future__ import annotations

import pytest
import torch
from helpers import IdentityCodec, tiny_scheduler, tiny_unet
from monai.inferers import LatentDiffusionInferer
from monai.networks.schedulers import RFlowScheduler

from monai_synth.inferers import (
    ClassConditionedDiffusionInferer,
    ClassConditionedLatentDiffusionInferer,
    Condition,
    LatentLowPassGuidance,
    lowpass_filter,
    output_from_x0,
    predicted_x0,
    sample,
)
from monai_synth.networks import build_autoencoder, decode_latents


def _ae():
    torch.manual_seed(0)
    return build_autoencoder(channels=(8, 8), latent_channels=2, norm_num_groups=4).eval()


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_x0_and_output_are_inverse(kind):
    sched = tiny_scheduler("ddim", prediction_type=kind)
    x_t, out = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    x0 = predicted_x0(sched, out, x_t, 30)
    torch.testing.assert_close(output_from_x0(sched, x0, x_t, 30), out, rtol=1e-4, atol=1e-5)
    if kind == "epsilon":  # Ho et al. 2020, Eq. 15 by hand
        ab = sched.alphas_cumprod[30]
        torch.testing.assert_close(x0, (x_t - (1 - ab).sqrt() * out) / ab.sqrt())


def test_x0_of_rectified_flow_inverts_its_path_and_refuses_t0():
    # flow path x_t = (1 - t/T) x0 + (t/T) noise; the network's target is x0 - noise (MONAI's RFlowScheduler)
    sched = RFlowScheduler(num_train_timesteps=10)
    x0, noise = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    x_t = 0.7 * x0 + 0.3 * noise
    torch.testing.assert_close(predicted_x0(sched, x0 - noise, x_t, 3), x0)
    with pytest.raises(ValueError, match="t > 0"):
        predicted_x0(sched, x0 - noise, x_t, 0)


def test_training_pass_is_the_class_conditioned_pass_on_scaled_latents():
    ae, net, sched = _ae(), tiny_unet(2, in_channels=2).eval(), tiny_scheduler("ddpm")
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    noise, t, y = torch.randn(3, 2, 8, 8), torch.tensor([1, 10, 40]), torch.tensor([0, 1, 2])
    latent = ClassConditionedLatentDiffusionInferer(sched, scale_factor=0.7, num_classes=2)
    assert isinstance(latent, LatentDiffusionInferer)
    with torch.no_grad():
        mu, _ = ae.encode(x)
        ref = ClassConditionedDiffusionInferer(sched, 2)(mu * 0.7, net, noise, t, class_labels=y)
        got = latent(x, ae, net, noise, t, class_labels=y)
    torch.testing.assert_close(got, ref)
    with pytest.raises(ValueError, match="the latents are"):
        latent(x, ae, net, torch.randn(3, 2, 4, 4), t, class_labels=y)


def test_sample_decodes_what_the_loop_samples():
    ae, net = _ae(), tiny_unet(2, in_channels=2).eval()
    sched = tiny_scheduler("ddim", steps=4, clip_sample=False)
    inferer = ClassConditionedLatentDiffusionInferer(sched, scale_factor=2.0, num_classes=2, decode_batch_size=2)
    noise, y = torch.randn(3, 2, 8, 8), torch.tensor([0, 1, 0])
    g = torch.Generator().manual_seed(0)
    images = inferer.sample(noise, ae, net, class_labels=y, guidance_scale=2.0, generator=g)
    latents = sample(net, sched, noise=noise, class_labels=y, guidance_scale=2.0, null_class=2,
                     generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert images.shape == (3, 1, 16, 16)
    torch.testing.assert_close(images, decode_latents(ae, latents, 2.0))


def test_latent_guidance_with_an_identity_codec_is_x0_ilvr():
    sched = tiny_scheduler("ddim", steps=5, clip_sample=False)
    ref = torch.rand(1, 1, 8, 8) * 2 - 1
    weight = torch.zeros(1, 1, 8, 8)
    weight[..., 2:6, 2:6] = 1.0
    g = LatentLowPassGuidance(IdentityCodec(), 2.0, [Condition(reference=ref, factor=2, weight=weight)], iterations=1)
    x_t, out = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    new = g(out, x_t, 20, sched)
    image = predicted_x0(sched, out, x_t, 20) / 2.0
    expected = image + weight * (lowpass_filter(ref.expand_as(image), 2) - lowpass_filter(image, 2))
    torch.testing.assert_close(predicted_x0(sched, new, x_t, 20) / 2.0, expected, rtol=1e-4, atol=1e-4)


def test_latent_guidance_respects_last_step_and_needs_conditions():
    sched = tiny_scheduler("ddim", steps=5, clip_sample=False)
    g = LatentLowPassGuidance(IdentityCodec(), 1.0, [Condition(reference=torch.zeros(1, 1, 8, 8), last_step=30)])
    out = torch.randn(1, 1, 8, 8)
    assert g(out, torch.randn(1, 1, 8, 8), 10, sched) is out
    with pytest.raises(ValueError, match="at least one Condition"):
        LatentLowPassGuidance(IdentityCodec(), 1.0, [])
    with pytest.raises(ValueError, match="must be a Condition"):
        LatentLowPassGuidance(IdentityCodec(), 1.0, [torch.zeros(1)])


def test_guided_latent_samples_follow_the_reference_low_frequencies():
    """With a real (untrained) autoencoder the decoded samples' low frequencies move towards the reference."""
    ae, net = _ae(), tiny_unet(None, in_channels=2).eval()
    sched = tiny_scheduler("ddim", steps=10, clip_sample=False)
    ref = torch.zeros(1, 1, 16, 16) - 0.8
    ref[..., :, 8:] = 0.8
    inferer = ClassConditionedLatentDiffusionInferer(sched, scale_factor=1.0)
    noise = torch.randn(4, 2, 8, 8)
    free = inferer.sample(noise, ae, net, generator=torch.Generator().manual_seed(0))

    def err(x):
        return float((lowpass_filter(x, 4) - lowpass_filter(ref.expand_as(x), 4)).abs().mean())

    errors = []
    for rounds in (1, 4):
        guide = LatentLowPassGuidance(ae, 1.0, [Condition(reference=ref, factor=4)], iterations=rounds)
        errors.append(err(inferer.sample(noise, ae, net, generator=torch.Generator().manual_seed(0),
                                         lowpass_guidance=guide)))  # fmt: skip
    assert errors[0] < 0.7 * err(free) and errors[1] < 0.6 * errors[0]  # more rounds: closer to the reference
    with pytest.raises(ValueError, match="iterations"):
        LatentLowPassGuidance(ae, 1.0, [Condition(reference=ref)], iterations=0)
