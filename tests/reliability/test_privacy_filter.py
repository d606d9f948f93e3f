"""Privacy filter for generation: planted near-copies of training images are dropped and reported."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from helpers import tiny_unet

from monai_synth.data import load_image_2d
from monai_synth.engines.privacy import (
    PrivacyFilter,
    filter_generated_dataset,
    privacy_filter,
    threshold_from_holdout,
)


def _unit(path) -> np.ndarray:
    """A written image back in [0, 1] (integer images divided by their type's maximum, as the writers store them)."""
    return load_image_2d(path, rescale="dtype").numpy()


def brute_nearest(syn: np.ndarray, train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Independent reference: RMS pixel distance to every training image, by explicit loops."""
    d = np.array([[np.sqrt(np.mean((s.astype(np.float64) - t) ** 2)) for t in train] for s in syn])
    return d.min(1), d.argmin(1)


@pytest.fixture
def planted():
    rng = np.random.default_rng(7)
    train = rng.random((10, 1, 8, 8)).astype(np.float32)
    syn = rng.random((6, 1, 8, 8)).astype(np.float32)
    syn[1] = train[3]  # exact copy
    syn[4] = np.clip(train[7] + rng.normal(0, 0.01, (1, 8, 8)), 0, 1)  # near copy
    return syn, train


def test_planted_copies_are_dropped_with_their_nearest_training_image(planted):
    syn, train = planted
    res = privacy_filter(syn, train, threshold=0.05)
    dist, idx = brute_nearest(syn, train)
    assert res.dropped_indices == [1, 4] and res.nearest_train_indices == [3, 7]
    assert res.kept_indices == [0, 2, 3, 5]
    np.testing.assert_allclose(res.distances, dist[[1, 4]], atol=1e-6)
    assert res.distances[0] == 0.0 and 0.005 < res.distances[1] < 0.015
    assert dist[[0, 2, 3, 5]].min() > 0.2  # the others are far: independent uniform images


def test_threshold_zero_keeps_everything_and_tensor_input(planted):
    syn, train = planted
    res = privacy_filter(torch.as_tensor(syn), torch.as_tensor(train), threshold=0.0)
    assert res.kept_indices == list(range(6)) and res.n_dropped == 0


def test_batches_report_global_indices(planted, tmp_path):
    syn, train = planted
    pf = PrivacyFilter(train, threshold=0.05)
    a, b = pf(syn[:3]), pf(syn[3:])
    assert a.dropped_indices == [1] and b.dropped_indices == [4] and b.kept_indices == [0, 2]
    assert pf.summary() == {"threshold": 0.05, "n_checked": 6, "n_dropped": 2}
    rows = list(csv.DictReader(open(pf.write_report(tmp_path / "r.csv"))))
    assert [(int(r["synthetic_index"]), int(r["nearest_train_index"])) for r in rows] == [(1, 3), (4, 7)]
    doc = json.loads(pf.write_report(tmp_path / "r.json").read_text())
    assert doc["summary"]["n_dropped"] == 2 and doc["dropped"][1]["nearest_train_index"] == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv", "r.json"]  # no temporary files left


def test_threshold_from_holdout_is_the_quantile_of_holdout_distances():
    rng = np.random.default_rng(3)
    train, holdout = rng.random((12, 1, 6, 6)), rng.random((9, 1, 6, 6))
    d, _ = brute_nearest(holdout, train)
    for q in (0.0, 0.25, 0.5, 1.0):
        assert threshold_from_holdout(train.astype(np.float32), holdout.astype(np.float32), q) == pytest.approx(
            np.quantile(d, q), rel=1e-5
        )
    with pytest.raises(ValueError, match="quantile"):
        threshold_from_holdout(train, holdout, 1.5)


def test_filter_generated_dataset_removes_copies_in_every_format(tmp_path):
    from monai_synth.engines.diffusion import build_scheduler
    from monai_synth.engines.generate import generate_dataset

    out = tmp_path / "gen"
    generate_dataset(
        tiny_unet(), build_scheduler("ddim", num_train_timesteps=10), out, num_per_class=3, num_classes=2,
        image_size=8, formats=("png", "dicom", "nifti"), num_inference_steps=2, batch_size=6, progress=False,
    )  # fmt: skip
    items = json.loads((out / "datalist.json").read_text())["training"]
    assert len(items) == 6
    # plant: the training set contains generated image 2 (e.g. the model memorised a training image)
    rng = np.random.default_rng(0)
    train = rng.random((5, 1, 8, 8)).astype(np.float32)
    train[4] = _unit(out / items[2]["image"])
    for fmt in ("dicom", "nifti"):  # every format decodes to the same image
        other = json.loads((out / f"datalist_{fmt}.json").read_text())["training"][2]["image"]
        np.testing.assert_allclose(_unit(out / other), train[4], atol=1 / 255 + 1e-6)

    res = filter_generated_dataset(out, train, threshold=0.01)
    assert res.dropped_indices == [2] and res.nearest_train_indices == [4]
    for name in ("datalist.json", "datalist_png.json", "datalist_dicom.json", "datalist_nifti.json"):
        kept = json.loads((out / name).read_text())["training"]
        assert len(kept) == 5 and all("synth_000002" not in e["image"] for e in kept)
        for e in kept:
            assert _unit(out / e["image"]).shape == (1, 8, 8)
    assert not list(out.rglob("synth_000002*"))
    rows = list(csv.DictReader(open(out / "privacy_filter.csv")))
    assert len(rows) == 1 and rows[0]["synthetic_index"] == "2" and "synth_000002" in rows[0]["image"]
    assert float(rows[0]["distance"]) < 1e-6
    assert json.loads((out / "privacy_filter.json").read_text())["summary"]["n_dropped"] == 1


def test_filter_generated_dataset_needs_a_datalist(tmp_path):
    with pytest.raises(FileNotFoundError, match="datalist.json"):
        filter_generated_dataset(tmp_path, np.zeros((1, 1, 8, 8), np.float32), 0.1)


def test_pipeline_synthesize_applies_the_privacy_filter(tmp_path):
    """``synthesize(privacy_train=, privacy_threshold=)``: a memorised image never reaches the items."""
    from monai_synth.apps.augmentation import DiffusionRecipe, GeneratorResult, synthesize
    from monai_synth.engines.diffusion import build_scheduler

    recipe = DiffusionRecipe(image_size=8, sample_steps=2)
    gen = GeneratorResult(tiny_unet(), build_scheduler("ddpm", num_train_timesteps=10), 2, 0, 0, 0.0, 0.0, "")
    items, _ = synthesize(gen, 2, tmp_path / "a", recipe, seed=3)
    train = np.stack([items[1]["image"], np.zeros((1, 8, 8), np.float32)])  # image 1 was "memorised"
    kept, _ = synthesize(gen, 2, tmp_path / "b", recipe, seed=3, privacy_train=train, privacy_threshold=0.01)
    assert len(kept) == 3 and [it["label"] for it in kept] == [0, 1, 1]
    for it in kept:
        assert np.abs(it["image"] - items[1]["image"]).max() > 0.01
    assert (tmp_path / "b" / "privacy_filter.csv").read_text().count("\n") == 2  # header + one dropped image
    with pytest.raises(ValueError, match="privacy_train"):
        synthesize(gen, 2, tmp_path / "c", recipe, privacy_threshold=0.01)
