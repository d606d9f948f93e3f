"""ClassifierRunConfig validation, class weights, the stratified seeded sampler and the classifier transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_synth.engines.classification import (
    ClassifierRunConfig,
    class_weights,
    classifier_transforms,
    stratified_counts,
    stratified_fraction,
    stratified_sample,
)


def test_defaults_are_seed000():
    c = ClassifierRunConfig()
    # seed 000 Sec. 4.3: SGD lr 0.001 momentum 0.9, 20 epochs, step 7, gamma 0.1, batch 32
    assert (c.lr, c.momentum, c.epochs, c.lr_step_size, c.lr_gamma, c.batch_size) == (1e-3, 0.9, 20, 7, 0.1, 32)
    assert (c.rotate_degrees, c.translate_fraction, c.network) == (30.0, 0.1, "resnet18")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"real_fraction": 1.5}, "real_fraction"),
        ({"real_fraction": -0.1}, "real_fraction"),
        ({"lr": -0.001}, "lr"),
        ({"lr": 0.0}, "lr"),
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"num_classes": 1}, "num_classes"),
        ({"network": "vgg"}, "network"),
        ({"selection_metric": "loss"}, "selection_metric"),
        ({"lr_gamma": 0.0}, "lr_gamma"),
        ({"synthetic_added": -5}, "synthetic_added"),
        ({"momentum": 1.2}, "momentum"),
        ({"pretrain_epochs": 0}, "pretrain_epochs"),
        ({"real_fraction": 0.0}, "no training data"),
    ],
    ids=lambda v: str(v) if isinstance(v, str) else None,
)
def test_validation_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ClassifierRunConfig(**kwargs)


def test_fraction_zero_allowed_with_synthetic_pretraining():
    assert ClassifierRunConfig(real_fraction=0.0, synthetic_pretrain=True).uses_synthetic


def test_config_hash_ignores_name_and_tags_but_not_options():
    a = ClassifierRunConfig(name="a", tags={"x": "1"})
    b = ClassifierRunConfig(name="b", tags={"y": "2"}, num_workers=2)
    assert a.config_hash() == b.config_hash()
    assert a.config_hash() != a.replace(seed=1).config_hash()
    assert a.config_hash() == ClassifierRunConfig(name="a").config_hash()  # deterministic across instances


@pytest.mark.parametrize(
    "labels,k,expected",
    [
        ([0, 1, 1, 1], 2, [4 / (2 * 1), 4 / (2 * 3)]),
        ([0, 0, 1, 1], 2, [1.0, 1.0]),
        ([0, 1, 2, 2, 2, 2], 3, [6 / 3, 6 / 3, 6 / 12]),
    ],
    ids=["1to3", "balanced", "three_classes"],
)
def test_class_weights(labels, k, expected):
    w = class_weights(labels, k)
    np.testing.assert_allclose(w, expected)
    counts = np.bincount(labels, minlength=k)
    assert (counts * w).sum() == pytest.approx(len(labels))  # sum_c N_c w_c = N


def test_class_weights_missing_class():
    with pytest.raises(ValueError, match="at least one"):
        class_weights([1, 1, 1], 2)


PNEUMONIA_LABELS = np.r_[np.zeros(1214, int), np.ones(3494, int)]  # PneumoniaMNIST train counts


@pytest.mark.parametrize(
    "fraction,expected",
    [(0.1, {0: 121, 1: 350}), (1.0, {0: 1214, 1: 3494}), (0.0, {0: 0, 1: 0}), (0.5, {0: 607, 1: 1747})],
    ids=["10pct", "100pct", "0pct", "50pct"],
)
def test_stratified_fraction_counts(fraction, expected):
    rng = np.random.default_rng(5)
    labels = rng.permutation(PNEUMONIA_LABELS)
    idx = stratified_fraction(labels, fraction, seed=0)
    got = {c: int((labels[idx] == c).sum()) for c in (0, 1)}
    assert got == expected
    assert len(np.unique(idx)) == len(idx) and np.all(np.diff(idx) > 0)


def test_stratified_seeded():
    labels = np.random.default_rng(1).permutation(PNEUMONIA_LABELS)
    a, b = stratified_fraction(labels, 0.1, seed=3), stratified_fraction(labels, 0.1, seed=3)
    c = stratified_fraction(labels, 0.1, seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_stratified_counts_largest_remainder():
    # 3 classes of 1, 1, 1 items, draw 2: quotas 2/3 each -> ties resolved toward lower classes
    assert stratified_counts([0, 1, 2], 2) == {0: 1, 1: 1, 2: 0}
    assert sum(stratified_counts(PNEUMONIA_LABELS, 2500).values()) == 2500
    with pytest.raises(ValueError, match="n"):
        stratified_sample([0, 1], 3, seed=0)
    with pytest.raises(ValueError, match="fraction"):
        stratified_fraction([0, 1], 1.1, seed=0)


def _img(h=16, w=16):
    x = np.zeros((1, h, w), np.float32)
    x[0, 2:6, 1:4] = 1.0  # asymmetric blob, left side
    return x


def test_transforms_no_aug_is_identity():
    t = classifier_transforms(ClassifierRunConfig(geometric_aug=True), (16, 16), train=False)
    out = t({"image": _img(), "label": 1})
    assert isinstance(out["image"], torch.Tensor) and out["image"].dtype == torch.float32
    np.testing.assert_array_equal(out["image"].numpy(), _img())


def test_transforms_flip_is_horizontal():
    cfg = ClassifierRunConfig(geometric_aug=True, flip_prob=1.0, rotate_degrees=0.0, translate_fraction=0.0)
    out = classifier_transforms(cfg, (16, 16), train=True)({"image": _img(), "label": 0})
    np.testing.assert_allclose(out["image"].numpy(), _img()[:, :, ::-1], atol=1e-5)


def test_transforms_uint8_and_2d_input_scaled():
    x = (np.arange(16 * 16).reshape(16, 16) % 256).astype(np.uint8)
    out = classifier_transforms(ClassifierRunConfig(), (16, 16), train=False)({"image": x, "label": 0})
    assert out["image"].shape == (1, 16, 16)
    np.testing.assert_allclose(out["image"][0].numpy(), x / 255.0, atol=1e-6)


def test_transforms_augmentation_seeded():
    cfg = ClassifierRunConfig(geometric_aug=True, seed=7)
    a = classifier_transforms(cfg, (16, 16), train=True)({"image": _img(), "label": 0})["image"]
    b = classifier_transforms(cfg, (16, 16), train=True)({"image": _img(), "label": 0})["image"]
    c = classifier_transforms(cfg.replace(seed=8), (16, 16), train=True)({"image": _img(), "label": 0})["image"]
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    assert not torch.allclose(a, torch.as_tensor(_img()))


def test_png_path_loads_row_major(tmp_path):
    from PIL import Image

    x = np.zeros((12, 16), np.uint8)
    x[1:3, 10:15] = 255  # wide blob top right: a transpose would be visible
    path = tmp_path / "a.png"
    Image.fromarray(x).save(path)
    np.save(tmp_path / "a.npy", x)
    t = classifier_transforms(ClassifierRunConfig(), (12, 16), train=False)
    for p in (path, tmp_path / "a.npy"):
        out = t({"image": str(p), "label": 0})["image"]
        assert out.shape == (1, 12, 16)
        np.testing.assert_allclose(out[0].numpy(), x / 255.0, atol=1e-6)
    with pytest.raises(RuntimeError) as err:  # MONAI's Compose wraps the loader's error
        t({"image": str(tmp_path / "missing.png"), "label": 0})
    assert isinstance(err.value.__cause__, FileNotFoundError) and "missing.png" in str(err.value.__cause__)
