"""seed 000 Table 1 helper: stacking datalist items and the pair layout, with a cheap independent extractor."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from monai_synth.evaluate import stack_items, table1_evaluation


def _items(n, value, size=16, seed=0):
    rng = np.random.default_rng(seed)
    return [{"image": np.clip(value + 0.05 * rng.standard_normal((1, size, size)), 0, 1).astype(np.float32),
             "label": i % 2} for i in range(n)]  # fmt: skip


def _mean_std_features(x: torch.Tensor) -> torch.Tensor:
    flat = x.flatten(1)
    return torch.stack([flat.mean(1), flat.std(1), flat[:, :8].mean(1)], dim=1).double()


def test_stack_items_from_datalist_json(tmp_path):
    arr = (np.arange(64, dtype=np.uint8) * 4).reshape(8, 8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    (tmp_path / "dl.json").write_text(json.dumps({"training": [{"image": "a.png", "label": 1}]}))
    x = stack_items(tmp_path / "dl.json")
    assert x.shape == (1, 1, 8, 8)
    np.testing.assert_allclose(x[0, 0].numpy(), arr / 255.0, atol=1e-6)
    assert stack_items(tmp_path / "dl.json", image_size=4).shape == (1, 1, 4, 4)


def test_stack_items_subset_is_seeded():
    items = [{"image": np.full((1, 4, 4), i / 10, np.float32)} for i in range(10)]
    a, b = stack_items(items, max_images=4, seed=1), stack_items(items, max_images=4, seed=1)
    assert a.shape[0] == 4 and torch.equal(a, b)
    with pytest.raises(ValueError, match="empty"):
        stack_items([])


def test_table1_rows_and_ordering(tmp_path):
    train, test = _items(40, 0.5, seed=0), _items(40, 0.5, seed=1)
    synthetic, ood = _items(40, 0.55, seed=2), _items(40, 0.9, seed=3)
    table = table1_evaluation(train, test, synthetic, ood, max_images=40, n_ssim_pairs=20, output_dir=tmp_path,
                              extractor=_mean_std_features, kid_subset_size=20, kid_subsets=5)  # fmt: skip
    fid = {(r["Dataset A"], r["Dataset B"]): r["FID"] for r in table.rows}
    assert len(fid) == 6
    # same distribution < slightly shifted < far out of domain
    assert fid[("real train", "real test")] < fid[("synthetic", "real test")] < fid[("real test", "out-of-domain")]
    assert (tmp_path / "evaluation.md").is_file()
    no_ood = table1_evaluation(train, test, synthetic, None, max_images=40, n_ssim_pairs=10,
                               extractor=_mean_std_features, kid_subset_size=20, kid_subsets=5)  # fmt: skip
    assert [(r["Dataset A"], r["Dataset B"]) for r in no_ood.rows] == [
        ("real train", "real test"), ("synthetic", "real train"), ("synthetic", "real test")
    ]  # fmt: skip
