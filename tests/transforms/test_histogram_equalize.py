"""HistogramEqualize / HistogramEqualized and the ``histogram_equalize`` function (seed 001, Fig. 1b)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import TYPES
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from monai_synth.transforms import (
    HistogramEqualize,
    HistogramEqualizeD,
    HistogramEqualized,
    HistogramEqualizeDict,
    histogram_equalize,
)

# Hand computation, 4 bins over [0, 3]: edges 0, .75, 1.5, 2.25, 3 -> levels 0,1,2,3 fall in bins 0..3.
# counts [2, 2, 1, 1], cdf [2, 4, 5, 6], cdf_min 2, N 6 -> (cdf - 2) / 4 = [0, .5, .75, 1].
KNOWN = np.array([[0, 0, 1], [1, 2, 3]])
KNOWN_EQ = np.array([[0.0, 0.0, 0.5], [0.5, 0.75, 1.0]])


@pytest.mark.parametrize("kind", list(TYPES))
def test_known_array_matches_hand_computation(kind):
    make, expected_type = TYPES[kind]
    out = HistogramEqualize(num_bins=4)(make(KNOWN))
    assert type(out) is expected_type
    if kind == "metatensor":
        assert out.meta["tag"] == "kept"
    arr = out.numpy() if isinstance(out, torch.Tensor) else out
    np.testing.assert_allclose(arr, KNOWN_EQ, atol=1e-7)


def test_output_range_and_many_bins():
    # 256 bins over [0, 3]: each integer level still gets its own bin, so the mapping is unchanged.
    out = histogram_equalize(KNOWN, num_bins=256, output_range=(-1.0, 1.0))
    np.testing.assert_allclose(out, 2 * KNOWN_EQ - 1, atol=1e-12)


def test_mask_restricts_histogram():
    img = np.array([0.0, 1.0, 2.0, 3.0, 100.0])
    mask = np.array([1, 1, 1, 1, 0])
    # histogram of [0,1,2,3] with 4 bins: cdf [1,2,3,4], cdf_min 1 -> [0, 1/3, 2/3, 1]; 100 clips to the last bin.
    out = HistogramEqualize(num_bins=4)(img, mask=mask)
    np.testing.assert_allclose(out, [0.0, 1 / 3, 2 / 3, 1.0, 1.0], atol=1e-6)
    d = HistogramEqualized("x", num_bins=4, mask_key="m")({"x": img, "m": mask})
    np.testing.assert_allclose(d["x"], out)


def test_equalized_uniform_levels_are_evenly_spaced():
    img = np.repeat(np.arange(8), 3).reshape(4, 6)  # 8 levels, 3 pixels each
    out = histogram_equalize(img, num_bins=8)
    # cdf = 3k+3, cdf_min 3, N 24 -> level k maps to 3k/21 = k/7
    np.testing.assert_allclose(out, img / 7.0, atol=1e-12)


def test_constant_image_maps_to_low():
    np.testing.assert_array_equal(histogram_equalize(np.full((3, 3), 7.0), output_range=(-1, 1)), -np.ones((3, 3)))


def test_dict_aliases():
    assert HistogramEqualizeD is HistogramEqualized and HistogramEqualizeDict is HistogramEqualized


@pytest.mark.parametrize(
    "kwargs, message",
    [({"num_bins": 0}, "`num_bins`"), ({"num_bins": 2.5}, "`num_bins`"), ({"output_range": (1, 1)}, "`output_range`")],
    ids=["zero-bins", "float-bins", "empty-range"],
)
def test_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HistogramEqualize(**kwargs)


def test_call_errors():
    with pytest.raises(ValueError, match="mask"):
        HistogramEqualize()(np.zeros((2, 2)), mask=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="selects no pixels"):
        HistogramEqualize()(np.zeros((2, 2)), mask=np.zeros((2, 2)))


@settings(max_examples=40, deadline=None)
@given(
    img=arrays(np.float64, (3, 4), elements=st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=False)),
    num_bins=st.integers(1, 64),
)
def test_finite_input_gives_output_in_range_and_monotone(img, num_bins):
    out = histogram_equalize(img, num_bins=num_bins)
    assert np.all(np.isfinite(out)) and out.min() >= 0.0 and out.max() <= 1.0
    order = np.argsort(img, axis=None, kind="stable")
    assert np.all(np.diff(out.reshape(-1)[order]) >= 0), "equalization must preserve intensity order"
