"""GaussianEdgeWeight, PatchWeightMap, PlacePatch (+ dict versions) and ``place_patch`` (seed 001, Eq. 5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import TYPES, as_numpy
from hypothesis import given, settings
from hypothesis import strategies as st

from monai_synth.transforms import (
    GaussianEdgeWeight,
    GaussianEdgeWeightD,
    GaussianEdgeWeightd,
    PatchWeightMap,
    PatchWeightMapd,
    PlacePatch,
    PlacePatchd,
    gaussian_weight,
    patch_weight_map,
    place_patch,
)


@pytest.mark.parametrize(
    "shape, sigma_factor, centre",
    [((9, 9), 0.2, (4, 4)), ((7, 11), 0.25, (3, 5)), ((7, 7, 7), 0.3, (3, 3, 3))],
    ids=["square", "rectangle", "3d"],
)
def test_gaussian_closed_form(shape, sigma_factor, centre):
    w = gaussian_weight(shape, sigma_factor).double().numpy()
    sigma = sigma_factor * min(shape)
    assert w[centre] == 1.0
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"))
    d2 = sum((grid[i] - centre[i]) ** 2 for i in range(len(shape)))
    np.testing.assert_allclose(w, np.exp(-d2 / (2 * sigma**2)), rtol=1e-6)
    # spot check at distance d = 3 along the first axis
    idx = list(centre)
    idx[0] -= 3
    assert w[tuple(idx)] == pytest.approx(math.exp(-9 / (2 * sigma**2)), rel=1e-6)


def test_default_edge_value_documented():
    w = gaussian_weight((21, 21)).numpy()  # sigma = 4.2, middle of the edge at distance 10
    assert w[0, 10] == pytest.approx(math.exp(-100 / (2 * 4.2**2)), rel=1e-6)


@pytest.mark.parametrize("kind", list(TYPES))
def test_gaussian_edge_weight_multiplies_every_channel(kind):
    make, expected_type = TYPES[kind]
    patch = np.full((2, 5, 5), 3.0)
    out = GaussianEdgeWeight(0.2)(make(patch))
    assert type(out) is expected_type
    if kind == "metatensor":
        assert out.meta["tag"] == "kept"
    w = gaussian_weight((5, 5), 0.2).numpy()
    np.testing.assert_allclose(as_numpy(out), 3.0 * np.stack([w, w]), rtol=1e-6)
    assert as_numpy(out)[1, 2, 2] == 3.0


def test_gaussian_edge_weight_dict():
    assert GaussianEdgeWeightD is GaussianEdgeWeightd
    d = GaussianEdgeWeightd("p")({"p": np.ones((1, 3, 3))})
    assert d["p"][0, 1, 1] == 1.0 and d["p"][0, 0, 0] < 1.0


@pytest.mark.parametrize(
    "image_shape, patch_shape, center, box",
    [
        ((16, 16), (5, 5), (8, 8), (slice(6, 11), slice(6, 11))),
        ((16, 12), (4, 6), (2, 9), (slice(0, 4), slice(6, 12))),
        ((10, 10), (5, 5), (0, 9), (slice(0, 3), slice(7, 10))),  # cropped at two borders
    ],
    ids=["inside", "even-sizes", "cropped"],
)
def test_weight_map_zero_outside_box_gaussian_inside(image_shape, patch_shape, center, box):
    w = patch_weight_map(image_shape, patch_shape, center).numpy()
    assert w.shape == image_shape
    outside = np.ones(image_shape, dtype=bool)
    outside[box] = False
    assert np.all(w[outside] == 0.0)
    g = gaussian_weight(patch_shape).numpy()
    starts = [c - p // 2 for c, p in zip(center, patch_shape, strict=True)]
    patch_box = tuple(slice(s.start - st_, s.stop - st_) for s, st_ in zip(box, starts, strict=True))
    np.testing.assert_array_equal(w[box], g[patch_box])
    assert np.all(w[box] > 0)


@pytest.mark.parametrize("kind", list(TYPES))
def test_patch_weight_map_transform_types(kind):
    make, expected_type = TYPES[kind]
    out = PatchWeightMap((12, 12), center=(6, 6))(make(np.ones((1, 5, 5))))
    assert type(out) is expected_type
    arr = as_numpy(out)
    assert (
        arr.shape == (1, 12, 12) and arr[0, 6, 6] == 1.0 and arr.sum() == pytest.approx(gaussian_weight((5, 5)).sum())
    )


def test_place_patch_canvas_and_weight():
    patch = np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3) + 1
    canvas, weight = place_patch(patch, (8, 8), center=(2, 5), fill=-1.0)
    assert canvas.shape == (2, 8, 8) and weight.shape == (1, 8, 8)
    np.testing.assert_array_equal(canvas[:, 1:4, 4:7].numpy(), patch)
    assert (canvas[:, :1] == -1).all() and (canvas[:, 4:] == -1).all()
    np.testing.assert_array_equal(weight[0].numpy(), patch_weight_map((8, 8), (3, 3), (2, 5)).numpy())


@pytest.mark.parametrize("kind", list(TYPES))
def test_place_patch_transform_and_dicts(kind):
    make, expected_type = TYPES[kind]
    out = PlacePatch((6, 6))(make(np.ones((1, 2, 2))))
    assert type(out) is expected_type
    assert as_numpy(out).sum() == 4 and as_numpy(out)[0, 2:4, 2:4].sum() == 4
    d = PatchWeightMapd("p", (6, 6))({"p": np.ones((1, 3, 3))})
    assert d["p_weight"].shape == (1, 6, 6) and d["p"].shape == (1, 3, 3)
    d = PlacePatchd("p", (6, 6))(d)
    assert d["p"].shape == (1, 6, 6)
    assert np.all((d["p_weight"] > 0) == (d["p"] > 0))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: GaussianEdgeWeight(0.0), "`sigma_factor` must be a finite number > 0"),
        (lambda: GaussianEdgeWeight(float("nan")), "`sigma_factor`"),
        (lambda: PatchWeightMap((0, 4)), "`spatial_size`"),
        (lambda: PatchWeightMap((4, 4), center=(1,)), "`center`"),
        (lambda: PatchWeightMap((4, 4))(np.ones((3, 3))), "spatial dims"),
        (lambda: patch_weight_map((8, 8), (3, 3), (20, 20)), "lies outside the image"),
        (lambda: place_patch(np.ones((3, 3)), (8, 8)), "channel-first"),
        (lambda: gaussian_weight(()), "`patch_shape`"),
        (lambda: GaussianEdgeWeight()(np.ones(4)), "channel-first"),
    ],
    ids=[
        "zero-sigma",
        "nan-sigma",
        "zero-size",
        "center-dims",
        "patch-dims",
        "outside",
        "no-channel",
        "empty-shape",
        "1d",
    ],
)
def test_errors(call, message):
    with pytest.raises(ValueError, match=None) as err:
        call()
    assert message in str(err.value)


@settings(max_examples=40, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 16), st.integers(1, 16)),
    sigma_factor=st.floats(1e-3, 10.0),
)
def test_gaussian_weight_is_finite_in_unit_interval(shape, sigma_factor):
    w = gaussian_weight(shape, sigma_factor).numpy()
    assert np.all(np.isfinite(w)) and w.min() >= 0.0 and w.max() <= 1.0
    if all(n % 2 == 1 for n in shape):
        assert w[tuple(n // 2 for n in shape)] == 1.0
