"""RandQuantileNormalizeToReference(d) and ``quantile_normalize_to_reference`` (seed 001, section 2.2)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import TYPES, as_numpy
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from monai_synth.transforms import (
    RandQuantileNormalizeToReference,
    RandQuantileNormalizeToReferenceD,
    RandQuantileNormalizeToReferenced,
    RandQuantileNormalizeToReferenceDict,
    quantile_normalize_to_reference,
)

REF = np.arange(1001, dtype=np.float64).reshape(1, 7, 143) * 0.5 - 20.0  # min -20, quantile q -> -20 + 500 q
PATCH = np.array([[[3.0, 5.0], [7.0, 11.0]]])


def test_function_hits_min_and_quantile_exactly():
    out = quantile_normalize_to_reference(PATCH, REF, 0.98)
    ref_q = np.quantile(REF, 0.98)
    assert out.min() == REF.min() and out.max() == ref_q
    # linear in between: 5 is 1/4 of the way from 3 to 11
    assert out[0, 0, 1] == pytest.approx(REF.min() + 0.25 * (ref_q - REF.min()))


@pytest.mark.parametrize("kind", list(TYPES))
def test_random_q_is_in_range_and_applied(kind):
    make, expected_type = TYPES[kind]
    t = RandQuantileNormalizeToReference(reference=REF).set_random_state(3)
    out = t(make(PATCH))
    assert type(out) is expected_type
    if kind == "metatensor":
        assert out.meta["tag"] == "kept"
    assert 0.975 <= t.q <= 0.995
    arr = as_numpy(out)
    np.testing.assert_allclose([arr.min(), arr.max()], [-20.0, -20.0 + 500 * t.q], rtol=1e-6)
    np.testing.assert_allclose(arr.max(), np.quantile(REF, t.q), rtol=1e-6)


def test_q_drawn_uniformly_from_self_R():
    t = RandQuantileNormalizeToReference(REF, q_range=(0.2, 0.6)).set_random_state(7)
    qs = []
    for _ in range(3):
        t(PATCH)
        qs.append(t.q)
    expected = np.random.RandomState(7).uniform(0.2, 0.6, size=3)
    np.testing.assert_allclose(qs, expected)


def test_determinism():
    a = RandQuantileNormalizeToReference(REF).set_random_state(0)(PATCH)
    b = RandQuantileNormalizeToReference(REF).set_random_state(0)(PATCH)
    c = RandQuantileNormalizeToReference(REF).set_random_state(1)(PATCH)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_randomize_false_reuses_draw():
    t = RandQuantileNormalizeToReference(REF).set_random_state(0)
    first = t(PATCH)
    np.testing.assert_array_equal(t(PATCH, randomize=False), first)


def test_reference_at_call_time_overrides():
    t = RandQuantileNormalizeToReference(REF, q_range=(1.0, 1.0))
    out = t(PATCH, reference=np.array([2.0, 4.0]))
    np.testing.assert_allclose([out.min(), out.max()], [2.0, 4.0])


def test_dict_one_draw_for_all_keys_and_reference_key():
    assert RandQuantileNormalizeToReferenceD is RandQuantileNormalizeToReferenced
    assert RandQuantileNormalizeToReferenceDict is RandQuantileNormalizeToReferenced
    t = RandQuantileNormalizeToReferenced(["a", "b"], ref_key="ref").set_random_state(5)
    d = t({"a": PATCH, "b": PATCH * 2.0, "ref": REF})
    q = np.random.RandomState(5).uniform(0.975, 0.995)
    for key in ("a", "b"):
        np.testing.assert_allclose([d[key].min(), d[key].max()], [-20.0, np.quantile(REF, q)], rtol=1e-6)
    np.testing.assert_array_equal(d["ref"], REF)
    d2 = RandQuantileNormalizeToReferenced("a", ref_key="ref").set_random_state(5)({"a": PATCH, "ref": REF})
    np.testing.assert_array_equal(d2["a"], d["a"])


def test_constant_patch_maps_to_reference_min():
    np.testing.assert_array_equal(quantile_normalize_to_reference(np.ones((2, 2)), REF, 0.99), np.full((2, 2), -20.0))


@pytest.mark.parametrize(
    "q_range",
    [(0.995, 0.975), (-0.1, 0.5), (0.5, 1.1), (0.5,)],
    ids=["low>high", "below-0", "above-1", "one-value"],
)
def test_q_range_errors(q_range):
    with pytest.raises(ValueError, match=r"`q_range` must be \(low, high\) with 0 <= low <= high <= 1"):
        RandQuantileNormalizeToReference(q_range=q_range)


def test_call_errors():
    with pytest.raises(ValueError, match="needs a reference image"):
        RandQuantileNormalizeToReference()(PATCH)
    with pytest.raises(ValueError, match="`ref_key` 'ref' is not in the data dict"):
        RandQuantileNormalizeToReferenced("a", ref_key="ref")({"a": PATCH})
    with pytest.raises(ValueError, match=r"`q` must be in \[0, 1\]"):
        quantile_normalize_to_reference(PATCH, REF, 1.5)


@settings(max_examples=40, deadline=None)
@given(
    patch=arrays(np.float64, (2, 3), elements=st.floats(-1e6, 1e6, allow_nan=False)),
    ref=arrays(np.float64, (10,), elements=st.floats(-1e6, 1e6, allow_nan=False)),
    q=st.floats(0.0, 1.0),
)
def test_finite_input_gives_output_within_reference_min_and_quantile(patch, ref, q):
    out = quantile_normalize_to_reference(patch, ref, q)
    lo, hi = ref.min(), np.quantile(ref, q)
    tol = 1e-9 * max(1.0, abs(lo), abs(hi))
    assert np.all(np.isfinite(out)) and out.min() >= lo - tol and out.max() <= hi + tol
