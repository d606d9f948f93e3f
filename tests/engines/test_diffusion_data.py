"""Tests for the diffusion training-data sources (orientation, scaling, resizing, errors)."""

from __future__ import annotations

import numpy as np
import pytest

from monai_synth.data.datalists import write_datalist_json
from monai_synth.data.writers import write_png
from monai_synth.engines import load_diffusion_training_data, resize_unit_image


def test_resize_unit_image_area_and_channels():
    img = np.arange(16, dtype=np.float32).reshape(1, 4, 4) / 15
    out = resize_unit_image(img, 2)
    expected = np.array([[2.5, 4.5], [10.5, 12.5]], dtype=np.float32) / 15  # 2x2 block means
    assert out.shape == (1, 2, 2) and np.allclose(out[0], expected)
    rgb = np.stack([img[0], img[0] * 0, img[0] * 0])
    assert np.allclose(resize_unit_image(rgb, 4)[0], img[0] / 3)
    assert resize_unit_image(img[0], 8).shape == (1, 8, 8)


def test_datalist_source_keeps_orientation(tmp_path):
    img = np.zeros((6, 6), dtype=np.float32)
    img[0, :] = 1.0  # bright first row
    img[5, 5] = 0.5
    items = []
    for i, label in enumerate([0, 1]):
        p = write_png(img, tmp_path / f"im{i}.png")
        items.append({"image": str(p), "label": label})
    write_datalist_json({"training": items}, tmp_path / "dl.json")
    data = load_diffusion_training_data("datalist", tmp_path / "dl.json", image_size=6)
    assert [d["label"] for d in data] == [0, 1]
    np.testing.assert_allclose(data[0]["image"][0], np.round(img * 255) / 255, atol=1e-6)


def test_demo_source():
    data = load_diffusion_training_data("demo", image_size=16, demo_n_per_class=3)
    assert len(data) == 6 and sorted(d["label"] for d in data) == [0, 0, 0, 1, 1, 1]
    stack = np.stack([d["image"] for d in data])
    assert stack.shape == (6, 1, 16, 16) and stack.min() >= 0 and stack.max() <= 1 and stack.max() > 0.5


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(source="nope"), "data_source"),
        (dict(source="medmnist"), "data_path"),
        (dict(source="dicom", path="/tmp"), "label_csv"),
    ],
)
def test_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        load_diffusion_training_data(**kw)
