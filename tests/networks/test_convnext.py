"""ConvNeXt (Liu et al. 2022): shapes for 28/64 px, published parameter count, block maths, errors."""

from __future__ import annotations

import pytest
import torch

from monai_synth.networks import CONVNEXT_PRESETS, ConvNeXt, ConvNeXtBlock, LayerNormChannelsFirst, convnext


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize(
    "preset,size,in_ch,classes",
    [
        ("convnext_micro", 28, 1, 2),
        ("convnext_micro", 64, 3, 5),
        ("convnext_micro", 32, 1, 2),
    ],
    ids=["micro_28px_gray", "micro_64px_rgb", "micro_32px"],
)
def test_output_shape(preset, size, in_ch, classes):
    torch.manual_seed(0)
    net = convnext(preset, in_channels=in_ch, num_classes=classes).eval()
    assert net(torch.rand(2, in_ch, size, size)).shape == (2, classes)


def test_convnext_tiny_64px_and_3d():
    net = convnext("convnext_tiny", in_channels=1, num_classes=2).eval()
    assert net(torch.rand(1, 1, 64, 64)).shape == (1, 2)
    net3 = convnext("convnext_micro", spatial_dims=3, in_channels=1, num_classes=3).eval()
    assert net3(torch.rand(1, 1, 16, 16, 16)).shape == (1, 3)


def test_convnext_tiny_param_count_matches_published():
    # Liu et al. 2022, Table 1/10: ConvNeXt-T has 28M (28.6M in the official/timm code: 28,589,128) parameters
    # for 3 input channels and 1000 ImageNet classes.
    n = n_params(convnext("convnext_tiny", in_channels=3, num_classes=1000))
    assert abs(n - 28.6e6) / 28.6e6 < 0.02
    assert n == 28_589_128


def test_block_parameter_count_closed_form():
    # dwconv 7x7: d*49 + d ; LN: 2d ; Linear d->4d: 4d^2 + 4d ; Linear 4d->d: 4d^2 + d ; gamma: d
    d = 8
    blk = ConvNeXtBlock(2, d)
    assert n_params(blk) == d * 49 + d + 2 * d + 4 * d * d + 4 * d + 4 * d * d + d + d


def test_block_is_identity_at_zero_layer_scale():
    blk = ConvNeXtBlock(2, 4, layer_scale_init=1e-6)
    with torch.no_grad():
        blk.gamma.zero_()
    x = torch.rand(2, 4, 8, 8)
    torch.testing.assert_close(blk(x), x)


def test_layernorm_channels_first_matches_manual():
    x = torch.randn(2, 5, 3, 4)
    ln = LayerNormChannelsFirst(5, eps=1e-6)
    mu = x.mean(1, keepdim=True)
    var = x.var(1, keepdim=True, unbiased=False)
    torch.testing.assert_close(ln(x), (x - mu) / torch.sqrt(var + 1e-6), atol=1e-5, rtol=1e-5)


def test_stochastic_depth_rates_increase_linearly():
    net = ConvNeXt(depths=(1, 1, 2), dims=(8, 16, 32), stem_patch=2, drop_path_rate=0.3)
    rates = [b.drop_path.drop_prob if hasattr(b.drop_path, "drop_prob") else 0.0 for s in net.stages for b in s]
    torch.testing.assert_close(torch.tensor(rates), torch.linspace(0, 0.3, 4))


def test_deterministic_init():
    torch.manual_seed(3)
    a = convnext("convnext_micro")
    torch.manual_seed(3)
    b = convnext("convnext_micro")
    x = torch.rand(1, 1, 28, 28)
    torch.testing.assert_close(a.eval()(x), b.eval()(x))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"depths": (1, 1), "dims": (8,)}, "equal length"),
        ({"drop_path_rate": 1.0}, "drop_path_rate"),
        ({"spatial_dims": 4}, "spatial_dims"),
        ({"in_channels": 0}, "in_channels"),
    ],
    ids=["depth_dim_mismatch", "drop_path_1", "bad_dims", "zero_channels"],
)
def test_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ConvNeXt(**kwargs)


def test_unknown_preset():
    with pytest.raises(ValueError, match="preset"):
        convnext("convnext_huge")
    assert set(CONVNEXT_PRESETS) >= {"convnext_tiny", "convnext_micro"}
