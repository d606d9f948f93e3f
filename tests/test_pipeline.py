"""Tests of the end-to-end pipeline pieces (monai_synth.pipeline) on tiny data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from monai_synth.pipeline import (
    DiffusionRecipe,
    _TimeBudget,
    load_generator,
    load_labelled_splits,
    reduced_grid,
    synthesize,
    train_generator,
)

TINY = {"image_size": 8, "channels": (32, 32, 32), "epochs": 1, "batch_size": 8, "sample_steps": 3, "warmup_iters": 2}


def _npz(path, n=12, size=12):
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(n, 1).astype(np.uint8)
    np.savez(path, **arrays)
    return arrays


def test_medmnist_source_scales_and_resizes(tmp_path):
    arrays = _npz(tmp_path / "d.npz", size=8)
    splits = load_labelled_splits("medmnist", tmp_path / "d.npz", image_size=8)
    assert set(splits) == {"train", "val", "test"}
    first = splits["train"][0]
    assert first["image"].shape == (1, 8, 8) and first["image"].dtype == np.float32
    np.testing.assert_allclose(first["image"][0], arrays["train_images"][0] / 255.0, atol=1e-6)
    assert [it["label"] for it in splits["test"]] == [i % 2 for i in range(12)]
    resized = load_labelled_splits("medmnist", tmp_path / "d.npz", image_size=4)
    assert resized["val"][0]["image"].shape == (1, 4, 4)
    assert 0.0 <= resized["val"][0]["image"].min() and resized["val"][0]["image"].max() <= 1.0


def test_folder_source_reads_pngs_rows_first(tmp_path):
    img = np.zeros((8, 8), np.uint8)
    img[0, :] = 255  # top row bright: must stay the top row after loading
    for split in ("train", "valid", "test"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            Image.fromarray(img).save(tmp_path / split / cls / "x.png")
    splits = load_labelled_splits("folder", tmp_path, image_size=8)
    x = splits["val"][0]["image"][0]
    np.testing.assert_allclose(x[0], 1.0)
    np.testing.assert_allclose(x[1:], 0.0)
    assert sorted(it["label"] for it in splits["train"]) == [0, 1]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"source": "nope"}, "source"),
        ({"source": "medmnist", "path": None}, "path"),
        ({"source": "dicom", "path": "."}, "labels_csv"),
    ],
    ids=["unknown-source", "missing-path", "dicom-without-csv"],
)
def test_load_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_labelled_splits(**kwargs)


@pytest.mark.parametrize(
    "field, value",
    [("lr", -1.0), ("lr", float("nan")), ("cond_drop_prob", 1.5), ("guidance_scale", float("nan")),
     ("sample_steps", 2000), ("train_minutes", 0.0), ("batch_size", 0), ("sample_eta", 1.5)],
)  # fmt: skip
def test_recipe_validation(field, value):
    with pytest.raises(ValueError, match=field):
        DiffusionRecipe(**{field: value})


def test_reduced_grid_rows_and_options():
    grid = reduced_grid(epochs=2)
    assert [c.tags["table2_row"] for c in grid] == ["1", "5", "9", "13", "11", "15", "17", "18"]
    row17 = [c for c in grid if c.tags["table2_row"] == "17"][0]
    assert row17.synthetic_pretrain and row17.real_fraction == 0 and not row17.geometric_aug
    assert [c.name for c in reduced_grid(rows=[9, 11])] == ["row9", "row11"]


def _toy_items(n=16, size=8):
    items = []
    for i in range(n):
        x = np.zeros((1, size, size), np.float32)
        if i % 2:
            x[:, size // 2 :, :] = 1.0
        else:
            x[:, : size // 2, :] = 1.0
        items.append({"image": x, "label": i % 2})
    return items


def test_train_load_and_synthesize(tmp_path):
    recipe = DiffusionRecipe(**TINY)
    gen = train_generator(_toy_items(), recipe, tmp_path / "gen")
    assert gen.epochs == 1 and gen.iterations == 2 and gen.num_classes == 2
    assert gen.img_per_s > 0 and np.isfinite(gen.final_loss)
    assert gen.history["epoch"] == [1] and 0 < gen.history["elapsed_s"][0] <= gen.wall_s
    assert (tmp_path / "gen" / "generator_done.json").is_file()
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
        train_generator(_toy_items(size=8), DiffusionRecipe(**{**TINY, "image_size": 16}), tmp_path)


def test_time_budget_terminates():
    from ignite.engine import Engine

    engine = Engine(lambda e, b: None)
    _TimeBudget(0.0).attach(engine)
    engine.run(range(10), max_epochs=5)
    assert engine.state.iteration == 1


def test_fid_is_cached_per_image_sets(tmp_path, monkeypatch):
    import monai_synth.pipeline as pl

    calls = []

    def fake(splits, synthetic, n, device):
        calls.append(n)
        return {"fid_synth_test": float(len(synthetic)), "n_per_set": n}

    monkeypatch.setattr(pl, "_fid_summary", fake)
    items = _toy_items()
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


def test_time_budgeted_training_is_loadable_as_trained(tmp_path):
    """A wall-clock budget stops inside an epoch; the checkpoint written at termination holds those final weights."""
    recipe = DiffusionRecipe(**{**TINY, "epochs": 3, "train_minutes": 1e-9})
    gen = train_generator(_toy_items(), recipe, tmp_path / "gen")
    assert gen.iterations == 1  # stopped after the first of 2 iterations per epoch
    loaded = load_generator(tmp_path / "gen", recipe, num_classes=2)
    for (k, a), (_, b) in zip(gen.model.state_dict().items(), loaded.model.state_dict().items()):
        assert torch.equal(a, b), k
