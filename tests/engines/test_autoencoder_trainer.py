"""The autoencoder trainer: KL term, scale factor, adversarial schedule, checkpoints with the discriminator, resume."""

from __future__ import annotations

import math

import pytest
import torch
from ignite.engine import Events

from monai_synth.engines import AutoencoderIteration, build_autoencoder_trainer, kl_divergence, latent_scale_factor
from monai_synth.handlers import latest_checkpoint, load_checkpoint
from monai_synth.networks import build_autoencoder, build_patch_discriminator


def _ae(seed: int = 0):
    torch.manual_seed(seed)
    return build_autoencoder(channels=(8, 8), latent_channels=2, norm_num_groups=4)


def _loader(n: int = 8, size: int = 16):
    g = torch.Generator().manual_seed(1)
    images = torch.rand(n, 1, size, size, generator=g) * 2 - 1
    return torch.utils.data.DataLoader([{"image": images[i]} for i in range(n)], batch_size=4, shuffle=False)


def test_kl_matches_torch_distributions():
    mu, sigma = torch.randn(3, 2, 4, 4), torch.rand(3, 2, 4, 4) + 0.1
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(mu, sigma), torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    )
    torch.testing.assert_close(kl_divergence(mu, sigma), ref.flatten(1).sum(1).mean())
    assert float(kl_divergence(torch.zeros(2, 3), torch.ones(2, 3))) == 0.0


def test_scale_factor_gives_unit_std_latents():
    ae = _ae().eval()
    x = torch.rand(16, 1, 16, 16) * 2 - 1
    s = latent_scale_factor(ae, x, batch_size=5)
    with torch.no_grad():
        mu, _ = ae.encode(x)
    assert math.isclose(float((mu * s).std()), 1.0, rel_tol=1e-4)


def test_scale_factor_refuses_collapsed_latents():
    ae = _ae()
    for p in ae.parameters():
        torch.nn.init.zeros_(p)
    with pytest.raises(ValueError, match="standard deviation"):
        latent_scale_factor(ae, torch.rand(4, 1, 16, 16))


def test_training_lowers_the_reconstruction_loss():
    ae = _ae()
    trainer = build_autoencoder_trainer(ae, _loader(), max_epochs=30, lr=3e-3, adv_weight=0.0, ema_decay=None)
    losses = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output["recon_loss"])))
    trainer.run()
    assert sum(losses[-4:]) / 4 < 0.7 * sum(losses[:4]) / 4


def test_adversarial_terms_start_at_their_iteration_and_train_the_discriminator():
    ae, disc = _ae(), build_patch_discriminator(1, channels=8, num_layers_d=2)
    before = [p.detach().clone() for p in disc.parameters()]
    trainer = build_autoencoder_trainer(
        ae, _loader(), max_epochs=2, discriminator=disc, adv_weight=0.5, adv_start_iters=3, ema_decay=None
    )
    seen = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: seen.append((e.state.iteration, float(e.state.output["disc_loss"])))
    )
    trainer.run()
    assert [it for it, d in seen if d != 0.0] == [3, 4]
    assert any(not torch.equal(a, b) for a, b in zip(before, disc.parameters()))


def test_adversary_without_optimizer_is_refused():
    with pytest.raises(ValueError, match="disc_optimizer"):
        AutoencoderIteration(build_patch_discriminator(1, 8, 2), None, adv_weight=0.1)


def test_non_finite_loss_stops_with_a_clear_error():
    loader = torch.utils.data.DataLoader([{"image": torch.full((1, 16, 16), float("nan"))}] * 2, batch_size=2)
    trainer = build_autoencoder_trainer(_ae(), loader, max_epochs=1, adv_weight=0.0, ema_decay=None)
    with pytest.raises(FloatingPointError, match="autoencoder loss is nan at iteration 1"):
        trainer.run()


def test_checkpoints_hold_the_discriminator_and_resume_continues(tmp_path):
    def run(max_epochs):
        ae, disc = _ae(), build_patch_discriminator(1, channels=8, num_layers_d=2)
        trainer = build_autoencoder_trainer(
            ae, _loader(), max_epochs=max_epochs, discriminator=disc, adv_weight=0.1, adv_start_iters=1,
            checkpoint_dir=tmp_path / "ckpt", keep_last=None,
        )  # fmt: skip
        trainer.run()
        return trainer, disc

    trainer, disc = run(1)
    assert trainer.state.iteration == 2
    ckpt = latest_checkpoint(tmp_path / "ckpt")
    fresh = build_patch_discriminator(1, channels=8, num_layers_d=2)
    load_checkpoint(ckpt, others={"discriminator": fresh}, restore_rng=False)
    for a, b in zip(fresh.state_dict().values(), disc.state_dict().values()):
        torch.testing.assert_close(a, b)
    resumed, _ = run(2)
    assert resumed.state.epoch == 2 and resumed.state.iteration == 4
    with pytest.raises(ValueError, match="no 'critic' state"):
        load_checkpoint(ckpt, others={"critic": fresh})
