"""Tests for sample grids and the small training handlers (gradient clipping)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import tiny_unet
from monai.networks.schedulers import DDIMScheduler
from PIL import Image

from monai_synth.handlers import GradientClipHandler, SampleGridHandler, make_grid


def test_make_grid_layout_and_values():
    images = torch.stack([torch.full((1, 2, 3), v) for v in (-1.0, 0.0, 1.0)])  # 3 images, 2x3
    grid = make_grid(images, nrow=2)
    assert grid.shape == (2 * 3 + 1, 2 * 4 + 1) and grid.dtype == np.uint8
    assert (grid[1:3, 1:4] == 0).all() and (grid[1:3, 5:8] == 128).all() and (grid[4:6, 1:4] == 255).all()
    assert (grid[0] == 0).all() and (grid[4:6, 5:8] == 0).all()  # padding and empty cell
    with pytest.raises(ValueError, match="shape"):
        make_grid(torch.zeros(2, 3, 4, 4), nrow=2)


def test_sample_grid_handler(tmp_path):
    net = tiny_unet(num_classes=2)
    handler = SampleGridHandler(
        net,
        DDIMScheduler(num_train_timesteps=10),
        tmp_path,
        image_shape=(1, 8, 8),
        num_classes=2,
        n_per_class=3,
        every_n_epochs=2,
        num_inference_steps=2,
    )
    for epoch in (1, 2, 3):
        handler(SimpleNamespace(state=SimpleNamespace(epoch=epoch, max_epochs=3, device=torch.device("cpu"))))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples_epoch00002.png", "samples_epoch00003.png"]
    img = np.asarray(Image.open(tmp_path / "samples_epoch00002.png"))
    assert img.shape == (2 * 9 + 1, 3 * 9 + 1)
    # same seed every time: the two grids are identical
    assert np.array_equal(img, np.asarray(Image.open(tmp_path / "samples_epoch00003.png")))


def test_gradient_clip_handler():
    net = torch.nn.Linear(4, 1)
    (net(torch.full((2, 4), 10.0)).sum() * 100).backward()
    engine = SimpleNamespace(network=net, amp=False)
    GradientClipHandler(0.5)(engine)
    norm = torch.sqrt(sum((p.grad**2).sum() for p in net.parameters()))
    assert norm.item() == pytest.approx(0.5, rel=1e-4)
    with pytest.raises(ValueError, match="grad_clip_norm"):
        GradientClipHandler(0)
