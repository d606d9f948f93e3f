"""The lesion check of guided samples (monai_synth.metrics.lesion): values against numpy, pass/fail cases, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from monai_synth.data.annotations import BoundingBox
from monai_synth.metrics import LesionInBox, lesion_in_box, lesion_in_box_batch, summarize_lesion_scores

BOX = BoundingBox("A", 12, 8, 19, 15)  # 8 x 8, room for a displaced box on every side of a 32 x 32 image


def _scene(seed: int = 0):
    g = np.random.default_rng(seed)
    anatomy = g.normal(0.0, 0.3, (32, 32)).astype(np.float32)
    yy, xx = np.mgrid[:32, :32]
    blob = np.exp(-((yy - 11.5) ** 2 + (xx - 15.5) ** 2) / 8.0).astype(np.float32)
    blob += 0.3 * g.normal(size=(32, 32)).astype(np.float32) * (blob > 0.05)  # lesion texture
    lesion = anatomy.copy()
    inside = np.zeros((32, 32), bool)
    inside[8:16, 12:20] = True
    lesion[inside] += blob[inside]
    return anatomy, lesion, lesion - anatomy, inside


def test_lesion_in_box_matches_numpy_at_factor_one():
    anatomy, lesion, d_l, inside = _scene()
    noise = np.random.default_rng(1).normal(0.0, 0.1, (32, 32)).astype(np.float32)
    sample = anatomy + 0.6 * d_l + noise
    s = lesion_in_box(torch.from_numpy(sample), anatomy, lesion, BOX, factor=1)  # phi_1 = identity
    d_x = (sample - anatomy)[8:16, 12:20].ravel()
    t = d_l[8:16, 12:20].ravel()
    assert s.correlation == pytest.approx(np.corrcoef(d_x, t)[0, 1], abs=1e-6)
    assert s.gain == pytest.approx(np.polyfit(t, d_x, 1)[0], abs=1e-6)
    right = (sample - anatomy)[8:16, 20:28].ravel()  # the box moved one width right, one of the displaced cuts
    assert s.displaced >= np.corrcoef(right, t)[0, 1] - 1e-9
    assert s.inside and s.gain == pytest.approx(0.6, abs=0.1)


def test_lesion_in_box_linear_in_contrast():
    anatomy, lesion, d_l, _ = _scene()
    half = lesion_in_box(anatomy + 0.5 * d_l, anatomy, lesion, BOX, factor=2)
    # phi is linear: phi(y1 + a d) - phi(y1) = a (phi(l) - phi(y1)) exactly
    assert half.correlation == pytest.approx(1.0, abs=1e-6) and half.gain == pytest.approx(0.5, abs=1e-6)
    weak = lesion_in_box(anatomy + 0.1 * d_l, anatomy, lesion, BOX, factor=2)
    assert weak.correlation == pytest.approx(1.0, abs=1e-6) and not weak.inside  # the shape but not the contrast


def test_lesion_outside_its_box_fails():
    anatomy, lesion, d_l, _ = _scene()
    moved = anatomy + np.roll(d_l, 10, axis=1)  # the lesion drawn 10 px to the right of its box
    s = lesion_in_box(moved, anatomy, lesion, BOX)
    assert not s.inside and s.correlation < 0.5
    flat = lesion_in_box(anatomy, anatomy, lesion, BOX)  # nothing added: no correlation at all
    assert math.isnan(flat.correlation) and not flat.inside
    assert flat.to_dict()["correlation"] is None  # JSON-safe


def test_lesion_beside_the_box_too_is_not_inside():
    anatomy, lesion, d_l, _ = _scene()
    twice = anatomy + d_l + np.roll(d_l, -8, axis=1)  # the lesion in its box and again one box width left
    s = lesion_in_box(twice, anatomy, lesion, BOX, factor=1)
    assert s.correlation == pytest.approx(1.0, abs=1e-6) and s.displaced == pytest.approx(1.0, abs=1e-6)
    assert not s.inside  # it does not match better at its box than beside it


def test_lesion_in_box_errors():
    anatomy, lesion, _, _ = _scene()
    with pytest.raises(ValueError, match="one shape"):
        lesion_in_box(anatomy[:16], anatomy, lesion, BOX)
    with pytest.raises(ValueError, match="outside the 32x32 image"):
        lesion_in_box(anatomy, anatomy, lesion, BoundingBox("A", 30, 0, 33, 4))
    with pytest.raises(ValueError, match=r"\(rows, cols\)"):
        lesion_in_box(anatomy[None, None], anatomy, lesion, BOX)
    x = torch.zeros(2, 1, 32, 32)
    with pytest.raises(ValueError, match="one length"):
        lesion_in_box_batch(x, x, x, [BOX])


def test_summarize_lesion_scores():
    scores = [LesionInBox(0.9, 0.8, 0.1, True), LesionInBox(float("nan"), float("nan"), 0.2, False)]
    s = summarize_lesion_scores(scores)
    assert s["n"] == 2 and s["fraction_inside"] == 0.5
    assert s["median_correlation"] == pytest.approx(0.9) and s["median_displaced"] == pytest.approx(0.15)
    assert summarize_lesion_scores([])["fraction_inside"] is None
