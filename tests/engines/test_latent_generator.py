"""The latent generator of the augmentation study: recipe choice, two-stage training, reuse, synthesis, grids."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import tiny_items

from monai_synth.apps.augmentation import load_generator, synthesize, train_generator
from monai_synth.apps.augmentation.autoencoder import AUTOENCODER_DONE, load_autoencoder, reconstruction_report
from monai_synth.engines import LATENT_FROM_SIZE, AutoencoderRecipe, DiffusionRecipe, generate_dataset
from monai_synth.handlers import SampleGridHandler


def _recipe(**kw) -> DiffusionRecipe:
    base = dict(
        image_size=16, generator_kind="latent", channels=(8, 8), attention_levels=(False, False), norm_num_groups=8,
        num_head_channels=8, epochs=1, batch_size=8, sample_steps=3, warmup_iters=1,
        autoencoder={"channels": (8, 8), "norm_num_groups": 4, "latent_channels": 2, "epochs": 2, "batch_size": 8,
                     "adv_start_iters": 2},
    )  # fmt: skip
    base.update(kw)
    return DiffusionRecipe(**base)


def test_the_generator_kind_follows_the_image_size():
    assert DiffusionRecipe(image_size=LATENT_FROM_SIZE - 1).generator_kind == "pixel"
    r = DiffusionRecipe(image_size=128)
    assert r.generator_kind == "latent" and r.latent_size == 32 and r.schedule == "scaled_linear_beta"
    assert DiffusionRecipe(image_size=256).latent_size == 32
    assert DiffusionRecipe(image_size=128, generator_kind="pixel").schedule == "cosine"
    assert not r.build_scheduler().clip_sample and not r.sampling_scheduler().clip_sample
    torch.testing.assert_close(r.build_scheduler().betas[[0, -1]], torch.tensor([0.0015, 0.0195]), rtol=1e-4, atol=0)


def test_bad_latent_recipes_are_refused():
    with pytest.raises(ValueError, match="generator_kind must be 'pixel' or 'latent'"):
        DiffusionRecipe(generator_kind="vae")
    with pytest.raises(ValueError, match="not divisible by the autoencoder's downsampling factor 4"):
        DiffusionRecipe(image_size=130)
    with pytest.raises(ValueError, match="budget_fraction must be in"):
        AutoencoderRecipe(budget_fraction=1.0)
    with pytest.raises(ValueError, match="latent_channels must be an integer"):
        DiffusionRecipe(autoencoder={"latent_channels": 0})
    with pytest.raises(TypeError):
        DiffusionRecipe(autoencoder={"no_such_field": 1})


def test_latent_generator_trains_both_stages_reuses_them_and_synthesizes(tmp_path):
    torch.set_num_threads(1)
    items = tiny_items(16, size=16)
    recipe = _recipe()
    grids = SampleGridHandler(None, recipe.sampling_scheduler(), tmp_path / "grids", (1, 16, 16), num_classes=2,
                              n_per_class=2, every_n_epochs=1, num_inference_steps=2, log_mlflow=False)  # fmt: skip
    gen = train_generator(items, recipe, tmp_path / "gen", train_handlers=[grids])
    assert gen.generator_kind == "latent" and gen.autoencoder is not None and gen.scale_factor > 0
    assert unwrap_in(gen.model) == 2  # the UNet works on 2-channel latents
    done = json.loads((tmp_path / "gen" / "generator_done.json").read_text())
    assert done["generator_kind"] == "latent" and done["in_channels"] == 2
    stats = json.loads((tmp_path / "gen" / "autoencoder" / AUTOENCODER_DONE).read_text())
    assert stats["scale_factor"] == pytest.approx(gen.scale_factor)
    assert grids.image_shape == (2, 8, 8) and (tmp_path / "grids" / "samples_epoch00001.png").is_file()

    again = load_generator(tmp_path / "gen", recipe, 2)
    assert again.scale_factor == pytest.approx(gen.scale_factor)
    for a, b in zip(again.autoencoder.state_dict().values(), gen.autoencoder.state_dict().values()):
        torch.testing.assert_close(a, b)

    out, _ = synthesize(again, 2, tmp_path / "syn", recipe, batch_size=4)
    assert len(out) == 4 and np.asarray(out[0]["image"]).shape == (1, 16, 16)
    with pytest.raises(ValueError, match="holds a latent generator"):
        load_generator(tmp_path / "gen", _recipe(generator_kind="pixel"), 2)


def test_resume_reuses_a_finished_autoencoder(tmp_path):
    torch.set_num_threads(1)
    items, recipe = tiny_items(8, size=16), _recipe()
    first = train_generator(items, recipe, tmp_path)
    mtime = (tmp_path / "autoencoder" / AUTOENCODER_DONE).stat().st_mtime_ns
    second = train_generator(items, _recipe(epochs=2), tmp_path)
    assert (tmp_path / "autoencoder" / AUTOENCODER_DONE).stat().st_mtime_ns == mtime
    assert second.scale_factor == first.scale_factor and second.epochs == 2


def test_generation_checks_latent_channels_and_records_the_codec(tmp_path):
    torch.set_num_threads(1)
    gen = train_generator(tiny_items(8, size=16), _recipe(), tmp_path / "gen")
    sched = _recipe().sampling_scheduler(gen.scheduler)
    res = generate_dataset(gen.model, sched, tmp_path / "out", num_per_class=1, num_classes=2, image_size=16,
                           num_inference_steps=2, autoencoder=gen.autoencoder, scale_factor=gen.scale_factor,
                           progress=False)  # fmt: skip
    manifest = json.loads((tmp_path / "out" / "generation.json").read_text())
    assert res.written == 2 and manifest["scale_factor"] == pytest.approx(gen.scale_factor)
    with pytest.raises(ValueError, match="the autoencoder takes 1"):
        generate_dataset(gen.model, sched, tmp_path / "o2", num_per_class=1, num_classes=2, image_size=16,
                         in_channels=3, autoencoder=gen.autoencoder, progress=False)  # fmt: skip


def test_reconstruction_report_and_missing_autoencoder(tmp_path):
    torch.set_num_threads(1)
    items = tiny_items(8, size=32)
    gen = train_generator(items, _recipe(image_size=32), tmp_path)
    report = reconstruction_report(gen.autoencoder, items)
    assert set(report) == {"psnr", "ssim", "ms_ssim"} and all(np.isfinite(v) for v in report.values())
    assert np.isnan(reconstruction_report(gen.autoencoder, tiny_items(2, size=16))["ms_ssim"])  # below 28 px
    with pytest.raises(FileNotFoundError, match="autoencoder_done.json is missing"):
        load_autoencoder(tmp_path / "nowhere", _recipe())


def unwrap_in(model: torch.nn.Module) -> int:
    return int(model.in_channels)
