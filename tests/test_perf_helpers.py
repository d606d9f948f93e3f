"""Tests for ``monai_synth.utils.perf`` (fast-path helpers); benchmarks themselves are not tests."""

from __future__ import annotations

import copy
import os

import pytest
import torch
from monai.networks.nets import DiffusionModelUNet
from torch import nn

from monai_synth.utils.perf import (
    TimingStats,
    channels_last_format,
    count_flops,
    enable_compile_cache,
    enable_sdpa_attention,
    machine_info,
    matmul_peak_gflops,
    optimize_for_inference,
    set_num_threads,
    time_call,
    warm_up,
)


def _tiny_unet(**kwargs) -> DiffusionModelUNet:
    torch.manual_seed(0)
    return DiffusionModelUNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=1,
        channels=(8, 16),
        attention_levels=(False, True),
        num_res_blocks=1,
        norm_num_groups=8,
        num_head_channels=8,
        num_class_embeds=3,
        **kwargs,
    )


def _inputs(size: int = 16):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 1, size, size, generator=gen)
    t = torch.tensor([0, 10, 500, 999])
    y = torch.tensor([0, 1, 2, 1])
    return x, t, y


@pytest.mark.parametrize(
    "channels_last, sdpa",
    [(False, False), (True, False), (False, True), (True, True)],
    ids=["plain", "channels_last", "sdpa", "channels_last+sdpa"],
)
def test_optimize_for_inference_keeps_outputs(channels_last, sdpa):
    reference = _tiny_unet().eval()
    x, t, y = _inputs()
    with torch.no_grad():
        expected = reference(x, t, class_labels=y)
    fast = optimize_for_inference(copy.deepcopy(reference), channels_last=channels_last, sdpa=sdpa)
    assert not fast.training
    assert all(not p.requires_grad for p in fast.parameters())
    with torch.inference_mode():
        got = fast(x, t, class_labels=y)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    if channels_last:
        conv = next(m for m in fast.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_enable_sdpa_matches_constructor_flag():
    model = _tiny_unet().eval()
    built_with_flag = _tiny_unet(use_flash_attention=True).eval()
    flags = [m.use_flash_attention for m in model.modules() if hasattr(m, "use_flash_attention")]
    assert flags and not any(flags)
    assert enable_sdpa_attention(model) == len(flags)
    assert all(m.use_flash_attention for m in model.modules() if hasattr(m, "use_flash_attention"))
    x, t, y = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, class_labels=y), built_with_flag(x, t, class_labels=y))


def test_enable_sdpa_skips_dropout_blocks():
    model = _tiny_unet()
    block = next(m for m in model.modules() if hasattr(m, "use_flash_attention"))
    block.dropout_rate = 0.1
    total = sum(1 for m in model.modules() if hasattr(m, "use_flash_attention"))
    assert enable_sdpa_attention(model) == total - 1
    assert block.use_flash_attention is False
    assert enable_sdpa_attention(nn.Linear(2, 2)) == 0


@pytest.mark.parametrize(
    "layer, shape, expected",
    [
        (nn.Linear(8, 4), (3, 8), 2 * 3 * 8 * 4),
        (nn.Linear(5, 7, bias=False), (2, 5), 2 * 2 * 5 * 7),
        # conv: 2 * B * C_out * H_out * W_out * C_in * k * k, padding 1 keeps 10x10
        (nn.Conv2d(3, 6, 3, padding=1), (2, 3, 10, 10), 2 * 2 * 6 * 10 * 10 * 3 * 3 * 3),
        # stride 2, no padding: H_out = (9 - 3) // 2 + 1 = 4
        (nn.Conv2d(4, 2, 3, stride=2), (1, 4, 9, 9), 2 * 1 * 2 * 4 * 4 * 4 * 3 * 3),
        # groups divide the input channels seen by each output channel
        (nn.Conv2d(4, 8, 1, groups=2), (1, 4, 5, 5), 2 * 1 * 8 * 5 * 5 * 2 * 1 * 1),
    ],
    ids=["linear", "linear_nobias", "conv_same", "conv_stride2", "conv_groups"],
)
def test_count_flops_closed_form(layer, shape, expected):
    assert count_flops(layer, torch.zeros(shape)) == expected


def test_count_flops_unet_is_conv_dominated():
    model = _tiny_unet().eval()
    x, t, y = _inputs()
    total = count_flops(model, x, t, class_labels=y)
    first_conv = model.conv_in.conv
    # the input conv alone: 2 * B * C_out * H * W * C_in * 3 * 3
    assert first_conv.out_channels == 8
    assert total > 2 * 4 * 8 * 16 * 16 * 1 * 9
    assert count_flops(model, x[:2], t[:2], class_labels=y[:2]) * 2 == total


@pytest.mark.parametrize(
    "kwargs",
    [{"num_threads": 0}, {"num_threads": -1}, {"num_threads": 1.5}, {"num_interop_threads": 0}, {"num_threads": True}],
    ids=["zero", "negative", "float", "interop_zero", "bool"],
)
def test_set_num_threads_rejects_bad_values(kwargs):
    with pytest.raises(ValueError, match="must be a positive integer"):
        set_num_threads(**kwargs)


def test_set_num_threads_roundtrip():
    before = torch.get_num_threads()
    try:
        assert set_num_threads(1)["num_threads"] == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert set_num_threads()["num_threads"] == before


@pytest.mark.parametrize(
    "spatial_dims, expected", [(2, torch.channels_last), (3, torch.channels_last_3d)], ids=["2d", "3d"]
)
def test_channels_last_format(spatial_dims, expected):
    assert channels_last_format(spatial_dims) == expected


@pytest.mark.parametrize("spatial_dims", [1, 4], ids=["1d", "4d"])
def test_channels_last_format_rejects(spatial_dims):
    with pytest.raises(ValueError, match="spatial_dims"):
        channels_last_format(spatial_dims)


def test_optimize_for_inference_rejects_bad_compile_mode():
    with pytest.raises(ValueError, match="compile_mode"):
        optimize_for_inference(nn.Linear(2, 2), compile_mode="fastest")


def test_time_call_counts_calls_and_median():
    calls = []
    stats = time_call(lambda: calls.append(1), repeats=5, warmup=2)
    assert len(calls) == 7
    assert isinstance(stats, TimingStats) and len(stats.times) == 5
    assert stats.minimum <= stats.median <= max(stats.times)


@pytest.mark.parametrize(
    "kwargs, match", [({"repeats": 0}, "repeats"), ({"warmup": -1}, "warmup")], ids=["repeats", "warmup"]
)
def test_time_call_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        time_call(lambda: None, **kwargs)


def test_warm_up_runs_in_inference_mode():
    seen = []
    warm_up(lambda: seen.append(torch.is_inference_mode_enabled()), iterations=3)
    assert seen == [True, True, True]
    with pytest.raises(ValueError, match="iterations"):
        warm_up(lambda: None, iterations=0)


def test_matmul_peak_gflops_positive_and_validates():
    assert matmul_peak_gflops(size=64, repeats=2, warmup=1) > 0
    with pytest.raises(ValueError, match="size"):
        matmul_peak_gflops(size=0)


def test_enable_compile_cache_sets_env(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    path = enable_compile_cache(tmp_path / "inductor")
    assert path.is_dir()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(path)


def test_machine_info_records_versions():
    info = machine_info(extra_packages=["torch", "surely-not-installed-pkg"])
    assert info["torch"] == torch.__version__
    assert info["num_threads"] == torch.get_num_threads()
    assert info["packages"]["surely-not-installed-pkg"] is None
    assert info["packages"]["torch"] is not None
