"""RandPatchAugment / RandPatchAugmentd: rotation, translation, flips of pathology patches (seed 001, section 3)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import TYPES, as_numpy

from monai_synth.transforms import RandPatchAugment, RandPatchAugmentD, RandPatchAugmentd, RandPatchAugmentDict

PATCH = np.arange(64, dtype=np.float32).reshape(1, 8, 8)


def _dihedral(x: np.ndarray) -> list[np.ndarray]:
    """All 8 rotations/reflections of the 2-D square (independent reference via numpy)."""
    out = []
    for k in range(4):
        r = np.rot90(x, k, axes=(1, 2))
        out += [r, np.flip(r, 1)]
    return out


@pytest.mark.parametrize("kind", list(TYPES))
def test_types_kept(kind):
    make, expected_type = TYPES[kind]
    out = RandPatchAugment(translate_range=2).set_random_state(0)(make(PATCH))
    assert type(out) is expected_type and tuple(out.shape) == PATCH.shape
    if kind == "metatensor":
        assert out.meta["tag"] == "kept"


def test_right_angle_mode_gives_dihedral_images_and_covers_them():
    t = RandPatchAugment(rotation="right_angle").set_random_state(1)
    refs = _dihedral(PATCH)
    seen = set()
    for _ in range(64):
        out = as_numpy(t(PATCH))
        matches = [i for i, r in enumerate(refs) if np.array_equal(out, r)]
        assert len(matches) == 1, "right-angle mode must give an exact rotation/flip of the patch"
        seen.add(matches[0])
    assert seen == set(range(8))


def test_any_angle_rotation_differs_from_right_angles_and_keeps_centre():
    patch = np.zeros((1, 15, 15), dtype=np.float32)
    patch[0, 7, 7] = 1.0  # centre pixel is a fixed point of any rotation about the centre
    patch[0, 7, 12] = 1.0
    t = RandPatchAugment(rotation="any", flip_prob=0.0).set_random_state(2)
    out = as_numpy(t(patch))
    assert out[0, 7, 7] == pytest.approx(1.0, abs=1e-4)
    assert not any(np.allclose(out, r, atol=1e-3) for r in _dihedral(patch))


def test_translation_only_shifts_by_an_offset_within_range():
    patch = np.zeros((1, 16, 16), dtype=np.float32)
    patch[0, 8, 8] = 1.0
    t = RandPatchAugment(rotation="any", rotate_range=0.0, translate_range=3, flip_prob=0.0, mode="nearest")
    t.set_random_state(4)
    shifts = set()
    for _ in range(10):
        out = as_numpy(t(patch))
        (r, c) = np.argwhere(out[0] == 1.0)[0]
        assert abs(r - 8) <= 3 and abs(c - 8) <= 3
        shifts.add((r, c))
    assert len(shifts) > 1


def test_determinism():
    a = RandPatchAugment(translate_range=2).set_random_state(0)(PATCH)
    b = RandPatchAugment(translate_range=2).set_random_state(0)(PATCH)
    c = RandPatchAugment(translate_range=2).set_random_state(1)(PATCH)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_prob_zero_is_identity():
    np.testing.assert_array_equal(RandPatchAugment(prob=0.0, translate_range=2)(PATCH), PATCH)


def test_dict_applies_same_draw_to_all_keys():
    assert RandPatchAugmentD is RandPatchAugmentd and RandPatchAugmentDict is RandPatchAugmentd
    t = RandPatchAugmentd(["img", "mask"], translate_range=2).set_random_state(3)
    d = t({"img": PATCH, "mask": PATCH.copy(), "other": 1})
    np.testing.assert_array_equal(d["img"], d["mask"])
    assert d["other"] == 1
    single = RandPatchAugment(translate_range=2).set_random_state(3)(PATCH)
    np.testing.assert_array_equal(d["img"], single)


def test_3d_patch():
    patch = np.random.RandomState(0).rand(1, 6, 6, 6).astype(np.float32)
    out = RandPatchAugment(spatial_dims=3, rotation="right_angle").set_random_state(0)(patch)
    assert out.shape == patch.shape
    np.testing.assert_allclose(np.sort(out.ravel()), np.sort(patch.ravel()))  # a permutation of the voxels


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"spatial_dims": 1}, "`spatial_dims` must be one of [2, 3]"),
        ({"rotation": "diagonal"}, "`rotation` must be one of ['any', 'right_angle']"),
        ({"rotate_range": -1.0}, "`rotate_range`"),
        ({"translate_range": -2}, "`translate_range`"),
        ({"translate_range": (1, 2, 3)}, "`translate_range`"),
        ({"flip_prob": 1.5}, "`flip_prob` must be in [0, 1]"),
        ({"prob": -0.1}, "`prob` must be in [0, 1]"),
        ({"rotate_range": math.inf}, "`rotate_range`"),
    ],
    ids=["dims", "rotation", "neg-angle", "neg-shift", "shift-len", "flip-prob", "prob", "inf-angle"],
)
def test_argument_errors(kwargs, message):
    with pytest.raises(ValueError) as err:
        RandPatchAugment(**kwargs)
    assert message in str(err.value)
