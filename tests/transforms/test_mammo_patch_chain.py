"""Seed 001 Fig. 1b chain on real CBIS-DDSM mammograms: equalize -> normalize to reference -> Gaussian -> place."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import torch
from monai.transforms import Compose

from monai_synth.transforms import (
    GaussianEdgeWeightd,
    HistogramEqualized,
    PatchWeightMapd,
    PlacePatchd,
    RandPatchAugmentd,
    RandQuantileNormalizeToReferenced,
    gaussian_weight,
)


@pytest.mark.shared
def test_fig1b_chain_on_real_mammograms(shared_data):
    root = shared_data / "mammography_cbis_ddsm"
    reference = pydicom.dcmread(root / "sfm-benign-0" / "1-130.dcm").pixel_array[::16, ::16].astype(np.float32)
    source = pydicom.dcmread(root / "sfm-malign-0" / "1-282.dcm").pixel_array[::8, ::8].astype(np.float32)
    r0, c0 = source.shape[0] // 2, source.shape[1] // 2
    patch = source[None, r0 - 16 : r0 + 17, c0 - 16 : c0 + 17]  # (1, 33, 33) from the breast centre
    assert patch.std() > 0
    ref = reference[None]
    chain = Compose(
        [
            HistogramEqualized("patch", num_bins=256),
            RandQuantileNormalizeToReferenced("patch", ref_key="reference"),
            RandPatchAugmentd("patch", rotation="right_angle"),
            GaussianEdgeWeightd("patch", sigma_factor=0.2),
            PatchWeightMapd("patch", spatial_size=ref.shape[1:], center=(100, 60)),
            PlacePatchd("patch", spatial_size=ref.shape[1:], center=(100, 60)),
        ]
    ).set_random_state(0)
    out = chain({"patch": patch, "reference": ref})
    canvas, weight = out["patch"], out["patch_weight"]
    assert canvas.shape == ref.shape and weight.shape == ref.shape
    q_hi = np.quantile(ref, 0.995)
    box = (0, slice(84, 117), slice(44, 77))
    # equalized + normalized values lie in [ref.min(), quantile_q]; the Gaussian only shrinks them (ref.min() == 0)
    assert ref.min() == 0.0
    assert canvas[box].max() <= q_hi + 1e-3 and canvas[box].min() >= 0.0
    # Eq. 5 weight: 1 at the patch centre, the patch Gaussian inside the box, exactly 0 outside
    assert weight[0, 100, 60] == 1.0
    np.testing.assert_allclose(weight[box], gaussian_weight((33, 33)).numpy(), rtol=1e-6)
    outside = np.ones(ref.shape, dtype=bool)
    outside[box] = False
    assert np.all(weight[outside] == 0.0) and np.all(canvas[outside] == 0.0)
    # the reference is untouched
    assert isinstance(out["reference"], np.ndarray) and np.array_equal(out["reference"], ref)
    assert not isinstance(canvas, torch.Tensor)
