"""Tests of the augmentation app's generator and synthesis (monai_synth.apps.augmentation) on tiny data.

The data loading these use is tested in tests/data/test_splits.py, the grids in tests/test_study.py and the
training handlers in tests/handlers/test_training_handlers.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import half_items
from monai.networks.nets import DiffusionModelUNet
from monai.networks.schedulers import DDPMScheduler, RFlowScheduler
from PIL import Image

from monai_synth.apps.augmentation import (
    GENERATOR_DONE,
    DiffusionItemsDataset,
    DiffusionRecipe,
    load_generator,
    synthesize,
    train_generator,
)

TINY = {"image_size": 8, "channels": (32, 32, 32), "epochs": 1, "batch_size": 8, "sample_steps": 3, "warmup_iters": 2}


@pytest.mark.parametrize(
    "field, value",
    [("lr", -1.0), ("lr", float("nan")), ("cond_drop_prob", 1.5), ("guidance_scale", float("nan")),
     ("sample_steps", 2000), ("train_minutes", 0.0), ("batch_size", 0), ("sample_eta", 1.5)],
)  # fmt: skip
def test_recipe_validation(field, value):
    with pytest.raises(ValueError, match=field):
        DiffusionRecipe(**{field: value})


def test_recipe_builds_its_network_and_scheduler():
    recipe = DiffusionRecipe(channels=(8, 16), attention_levels=(False, True), num_head_channels=8, norm_num_groups=8,
                             num_train_timesteps=20, sample_steps=5, schedule="linear_beta",
                             prediction_type="v_prediction")  # fmt: skip
    net = recipe.build_network(num_classes=3, in_channels=2)
    assert isinstance(net, DiffusionModelUNet)
    assert (net.in_channels, net.out_channels, tuple(net.block_out_channels)) == (2, 2, (8, 16))
    assert tuple(net.attention_levels) == (False, True) and tuple(net.num_head_channels) == (8, 8)
    assert net.num_class_embeds == 4  # 3 classes + the null class of classifier-free guidance
    with torch.no_grad():
        out = net(torch.zeros(2, 2, 8, 8), timesteps=torch.tensor([0, 19]), class_labels=torch.tensor([0, 3]))
    assert out.shape == (2, 2, 8, 8)
    assert recipe.build_network(num_classes=None).num_class_embeds is None
    sched = recipe.build_scheduler()
    assert isinstance(sched, DDPMScheduler) and sched.num_train_timesteps == 20
    assert sched.prediction_type == "v_prediction"
    # linear schedule (Ho et al. 2020): betas evenly spaced from MONAI's default 1e-4 to 2e-2
    torch.testing.assert_close(sched.betas, torch.linspace(1e-4, 2e-2, 20))
    assert isinstance(DiffusionRecipe().build_scheduler(), RFlowScheduler)  # the pixel default: rectified flow
    default = DiffusionRecipe(prediction_type="epsilon").build_scheduler()
    assert default.num_train_timesteps == DiffusionRecipe.num_train_timesteps == 1000
    # cosine schedule (Nichol & Dhariwal 2021, Eq. 17): alpha_bar(t) = f(t) / f(0), f(t) = cos^2((t/T + s)/(1 + s) pi/2)
    t = torch.arange(1, 1001, dtype=torch.float64)
    f = lambda t: torch.cos((t / 1000 + 0.008) / 1.008 * torch.pi / 2) ** 2  # noqa: E731
    torch.testing.assert_close(default.alphas_cumprod[:900].double(), (f(t) / f(torch.zeros(1)))[:900], atol=1e-4,
                               rtol=0)  # fmt: skip


def test_diffusion_items_dataset_maps_to_model_range_and_flips():
    items = half_items(4, size=4)
    ds = DiffusionItemsDataset(items, hflip=False, seed=0)
    assert len(ds) == 4 and ds[1]["label"].item() == 1 and ds[1]["label"].dtype == torch.long
    torch.testing.assert_close(ds[1]["image"], torch.as_tensor(items[1]["image"]) * 2 - 1)
    ramp = [{"image": np.tile(np.arange(4, dtype=np.float32) / 3, (1, 4, 1)), "label": 0}]
    flips = DiffusionItemsDataset(ramp, hflip=True, seed=0)
    seen = {tuple(round(v, 4) for v in flips[0]["image"][0, 0].tolist()) for _ in range(32)}
    assert seen == {(-1.0, -0.3333, 0.3333, 1.0), (1.0, 0.3333, -0.3333, -1.0)}  # identity and the mirror image


def test_train_load_and_synthesize(tmp_path):
    recipe = DiffusionRecipe(**TINY)
    gen = train_generator(half_items(), recipe, tmp_path / "gen")
    assert gen.epochs == 1 and gen.iterations == 2 and gen.num_classes == 2
    assert gen.img_per_s > 0 and np.isfinite(gen.final_loss)
    assert gen.history["epoch"] == [1] and 0 < gen.history["elapsed_s"][0] <= gen.wall_s
    assert (tmp_path / "gen" / GENERATOR_DONE).is_file() and GENERATOR_DONE == "generator_done.json"
    loaded = load_generator(tmp_path / "gen", recipe, num_classes=2)
    for (k, a), (_, b) in zip(gen.model.state_dict().items(), loaded.model.state_dict().items()):
        assert torch.equal(a, b), k
    items, wall = synthesize(loaded, 3, tmp_path / "syn", recipe, seed=5)
    again, _ = synthesize(loaded, 3, tmp_path / "syn2", recipe, seed=5)
    resumed, wall_resumed = synthesize(loaded, 3, tmp_path / "syn", recipe, seed=5)  # complete: nothing sampled
    assert wall_resumed == pytest.approx(wall) and len(resumed) == 6  # reports the original sampling cost
    assert wall > 0 and [it["label"] for it in items] == [0, 0, 0, 1, 1, 1]
    np.testing.assert_array_equal(np.stack([i["image"] for i in items]), np.stack([i["image"] for i in again]))
    dl = json.loads((tmp_path / "syn" / "datalist.json").read_text())
    assert [e["label"] for e in dl["training"]] == [0, 0, 0, 1, 1, 1]
    first = np.asarray(Image.open(tmp_path / "syn" / dl["training"][0]["image"]))
    assert first.shape == (8, 8)
    np.testing.assert_allclose(items[0]["image"][0], first / 255.0, atol=1e-6)  # items are what was written
    assert not list((tmp_path / "syn").rglob("*.tmp"))


def test_load_generator_requires_finished_training(tmp_path):
    with pytest.raises(FileNotFoundError, match="generator_done.json"):
        load_generator(tmp_path, DiffusionRecipe(**TINY), num_classes=2)


def test_train_rejects_wrong_size(tmp_path):
    with pytest.raises(ValueError, match="image_size"):
        train_generator(half_items(size=8), DiffusionRecipe(**{**TINY, "image_size": 16}), tmp_path)


def test_fid_is_cached_per_image_sets(tmp_path, monkeypatch):
    import monai_synth.apps.augmentation.pipeline as pl

    calls = []

    def fake(splits, synthetic, n, device, dims=2048):
        calls.append(n if dims == 2048 else (n, dims))
        return {"fid_synth_test": float(len(synthetic)) + dims, "n_per_set": n}

    monkeypatch.setattr(pl, "_fid_summary", fake)
    items = half_items()
    splits = {"train": items, "test": items[:4]}
    cache = tmp_path / "fid.json"
    first = pl._cached_fid(cache, splits, items[:6], 10, "cpu")
    assert pl._cached_fid(cache, splits, items[:6], 10, "cpu") == first and calls == [10]
    pl._cached_fid(cache, splits, items[:5], 10, "cpu")  # other synthetic set -> recomputed
    pl._cached_fid(cache, splits, items[:5], 20, "cpu")  # other n -> recomputed
    assert calls == [10, 10, 20]
    cache.write_text("{broken")
    pl._cached_fid(cache, splits, items[:5], 20, "cpu")  # unreadable cache -> recomputed, not an error
    assert calls == [10, 10, 20, 20]
    both = pl._cached_fid(cache, splits, items[:5], 20, "cpu", (64, 2048))  # other dimensions -> recomputed
    assert calls[-2:] == [(20, 64), 20] and both["dims"] == 64 and both["fid_synth_test"] == 5.0 + 64
    assert both["by_dims"]["2048"]["fid_synth_test"] == 5.0 + 2048
    with pytest.raises(ValueError, match="fid_dims"):
        pl._cached_fid(cache, splits, items[:5], 20, "cpu", (100,))


def test_time_budgeted_training_is_loadable_as_trained(tmp_path):
    """A wall-clock budget stops inside an epoch; the checkpoint written at termination holds those final weights."""
    recipe = DiffusionRecipe(**{**TINY, "epochs": 3, "train_minutes": 1e-9})
    gen = train_generator(half_items(), recipe, tmp_path / "gen")
    assert gen.iterations == 1  # stopped after the first of 2 iterations per epoch
    loaded = load_generator(tmp_path / "gen", recipe, num_classes=2)
    for (k, a), (_, b) in zip(gen.model.state_dict().items(), loaded.model.state_dict().items()):
        assert torch.equal(a, b), k
