"""ScaleToHU, HUWindow, MultiWindow (and their dictionary versions): reference values, types, errors, real DICOM."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import torch
from helpers import CT_DIR, TYPES, as_numpy
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from monai.data import MetaTensor
from monai.transforms import Compose, LoadImage, LoadImaged

from monai_synth.data import ClinicalDicomReader
from monai_synth.transforms import (
    RESCALE_APPLIED_KEY,
    WINDOW_PRESETS,
    HUWindow,
    HUWindowD,
    HUWindowd,
    HUWindowDict,
    MultiWindow,
    MultiWindowd,
    ScaleToHU,
    ScaleToHUd,
    rescale_from_meta,
    resolve_window,
    window_bounds,
)
from monai_synth.utils import WindowPreset


def _check_type(out, kind: str) -> None:
    expected = TYPES[kind][1]
    assert type(out) is expected, f"{kind} in -> {type(out).__name__} out"
    if kind == "metatensor":
        assert out.meta["tag"] == "kept"


# ----------------------------------------------------------------------------------------------- presets
@pytest.mark.parametrize(
    "name, bounds",
    [
        ("lung", (-1350.0, 150.0)),
        ("bone", (-500.0, 1300.0)),
        ("soft_tissue", (-160.0, 240.0)),
        ("soft tissue", (-160.0, 240.0)),
        ("SOFT TISSUE", (-160.0, 240.0)),
        ("mediastinum", (-125.0, 225.0)),
        ("brain", (0.0, 80.0)),
    ],
    ids=["lung", "bone", "soft_tissue", "soft-space-alias", "upper-case", "mediastinum", "brain"],
)
def test_preset_bounds(name, bounds):
    assert window_bounds(*resolve_window(name)) == bounds


def test_every_enum_member_has_a_preset():
    assert set(WINDOW_PRESETS) == set(WindowPreset)


# ------------------------------------------------------------------------------------------ HUWindow values
@pytest.mark.parametrize("kind", list(TYPES))
@pytest.mark.parametrize(
    "output_range, expected",
    [
        ((0.0, 1.0), [0.0, 0.0, 350 / 1500, 0.5, 1.0, 1.0]),
        ((-1.0, 1.0), [-1.0, -1.0, -1 + 2 * 350 / 1500, 0.0, 1.0, 1.0]),
    ],
    ids=["unit", "symmetric"],
)
def test_lung_window_reference_values(kind, output_range, expected):
    hu = [[-2000.0, -1350.0, -1000.0, -600.0, 150.0, 3000.0]]
    out = HUWindow("lung", output_range=output_range)(TYPES[kind][0](hu))
    _check_type(out, kind)
    np.testing.assert_allclose(as_numpy(out)[0], expected, atol=1e-6)


def test_custom_window_without_clip_extrapolates():
    out = HUWindow(level=0, width=100, clip=False)(np.array([[-100.0, -50.0, 0.0, 50.0, 100.0]]))
    np.testing.assert_allclose(out[0], [-0.5, 0.0, 0.5, 1.0, 1.5], atol=1e-6)


def test_dict_window_and_aliases():
    assert HUWindowD is HUWindowd and HUWindowDict is HUWindowd
    d = HUWindowd(["a", "b"], "brain")({"a": np.array([[40.0]]), "b": np.array([[80.0]]), "c": 5})
    assert float(d["a"][0, 0]) == pytest.approx(0.5) and float(d["b"][0, 0]) == pytest.approx(1.0)
    assert d["c"] == 5


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"window": "liver"}, "must be one of ['bone', 'brain', 'lung', 'mediastinum', 'soft_tissue']"),
        ({"level": 40.0, "width": 0.0}, "`width` must be a finite number > 0"),
        ({"level": 40.0, "width": -5.0}, "`width` must be a finite number > 0"),
        ({"level": 40.0}, "both `level` and `width`"),
        ({}, "give a `window` preset"),
        ({"window": "lung", "level": 1.0, "width": 2.0}, "not both"),
        ({"window": "lung", "output_range": (1.0, 0.0)}, "`output_range`"),
        ({"window": "lung", "output_range": (0.0, float("inf"))}, "`output_range`"),
        ({"level": float("nan"), "width": 10.0}, "`level` must be finite"),
    ],
    ids=[
        "unknown-preset",
        "zero-width",
        "negative-width",
        "missing-width",
        "nothing",
        "both",
        "reversed-range",
        "inf-range",
        "nan-level",
    ],
)
def test_window_argument_errors(kwargs, message):
    with pytest.raises(ValueError) as err:
        HUWindow(**kwargs)
    assert message in str(err.value)


@settings(max_examples=40, deadline=None)
@given(
    hu=arrays(np.float64, (1, 5), elements=st.floats(-1e6, 1e6, allow_nan=False)),
    window=st.sampled_from([p.value for p in WindowPreset]),
    output_range=st.sampled_from([(0.0, 1.0), (-1.0, 1.0)]),
)
def test_window_output_is_finite_and_in_range(hu, window, output_range):
    out = HUWindow(window, output_range=output_range)(hu)
    assert np.all(np.isfinite(out))
    assert out.min() >= output_range[0] and out.max() <= output_range[1]


# ----------------------------------------------------------------------------------------------- MultiWindow
@pytest.mark.parametrize("kind", list(TYPES))
def test_multiwindow_stacks_windows_as_channels(kind):
    hu = np.array([[[-1350.0, 150.0], [40.0, 400.0]]])  # (1, 2, 2)
    out = MultiWindow(["lung", "brain", (0.0, 200.0)])(TYPES[kind][0](hu))
    _check_type(out, kind)
    out = as_numpy(out)
    assert out.shape == (3, 2, 2)
    np.testing.assert_allclose(out[0], [[0.0, 1.0], [1390 / 1500, 1.0]], atol=1e-6)
    np.testing.assert_allclose(out[1], [[0.0, 1.0], [0.5, 1.0]], atol=1e-6)
    np.testing.assert_allclose(out[2], [[0.0, 1.0], [0.7, 1.0]], atol=1e-6)


def test_multiwindow_default_is_bone_lung_soft_tissue_3d():
    hu = np.full((1, 2, 2, 2), 40.0)
    out = MultiWindowd("x")({"x": hu})["x"]
    assert out.shape == (3, 2, 2, 2)
    np.testing.assert_allclose(out[:, 0, 0, 0], [540 / 1800, 1390 / 1500, 0.5], atol=1e-6)


@pytest.mark.parametrize(
    "windows, message",
    [
        ("lung", "non-empty sequence"),
        ([], "non-empty sequence"),
        ([(1.0, 2.0, 3.0)], "(level, width) pair"),
        (["nope"], "must be one of"),
    ],
    ids=["string", "empty", "triple", "unknown"],
)
def test_multiwindow_argument_errors(windows, message):
    with pytest.raises(ValueError, match=None) as err:
        MultiWindow(windows)
    assert message in str(err.value)


def test_multiwindow_rejects_multichannel_input():
    with pytest.raises(ValueError, match="single-channel"):
        MultiWindow()(np.zeros((2, 4, 4)))


# ------------------------------------------------------------------------------------------------- ScaleToHU
@pytest.mark.parametrize(
    "meta, expected",
    [
        ({"RescaleSlope": 2.0, "RescaleIntercept": -1024.0}, (2.0, -1024.0)),
        ({"00281053": {"vr": "DS", "Value": [1.5]}, "00281052": {"vr": "DS", "Value": [-1000]}}, (1.5, -1000.0)),
        ({"RescaleSlope": "1", "RescaleIntercept": [-1024]}, (1.0, -1024.0)),
        ({"RescaleSlope": 1.0}, (1.0, None)),
        ({}, (None, None)),
    ],
    ids=["keywords", "pydicom-json-tags", "string-and-list", "slope-only", "none"],
)
def test_rescale_from_meta(meta, expected):
    assert rescale_from_meta(meta) == expected


@pytest.mark.parametrize("kind", ["numpy", "tensor", "metatensor"])
def test_scale_to_hu_explicit_args(kind):
    stored = np.array([[0, 1000, 3000]], dtype=np.uint16)
    out = ScaleToHU(slope=1.0, intercept=-1024.0)(TYPES[kind][0](stored.astype(np.int32)))
    _check_type(out, kind)
    np.testing.assert_array_equal(as_numpy(out), [[-1024.0, -24.0, 1976.0]])
    if kind == "metatensor":
        assert out.meta[RESCALE_APPLIED_KEY] is True


@pytest.mark.parametrize(
    "meta",
    [
        {"RescaleSlope": 2.0, "RescaleIntercept": -100.0},
        {"00281053": 2.0, "00281052": -100.0},
    ],
    ids=["keywords", "tag-keys"],
)
def test_scale_to_hu_from_meta_and_not_twice(meta):
    img = MetaTensor(torch.tensor([[0.0, 50.0]]), meta=dict(meta))
    once = ScaleToHU()(img)
    np.testing.assert_array_equal(as_numpy(once), [[-100.0, 0.0]])
    assert RESCALE_APPLIED_KEY not in img.meta, "input metadata must not be mutated"
    twice = ScaleToHU()(once)
    np.testing.assert_array_equal(as_numpy(twice), [[-100.0, 0.0]])


def test_scale_to_hu_explicit_args_override_meta():
    img = MetaTensor(torch.tensor([[10.0]]), meta={"RescaleSlope": 2.0, "RescaleIntercept": -100.0})
    assert float(ScaleToHU(slope=1.0, intercept=0.0)(img)[0, 0]) == 10.0


def test_scale_to_hu_flags():
    img = MetaTensor(
        torch.tensor([[10.0]]), meta={"RescaleSlope": 2.0, "RescaleIntercept": 0.0, RESCALE_APPLIED_KEY: True}
    )
    assert float(ScaleToHU()(img)[0, 0]) == 10.0
    assert float(ScaleToHU(already_rescaled=False)(img)[0, 0]) == 20.0
    assert float(ScaleToHU(slope=3.0, intercept=0.0, already_rescaled=True)(np.array([[10.0]]))[0, 0]) == 10.0


def test_scale_to_hu_dict():
    d = ScaleToHUd("img", slope=2.0, intercept=1.0)({"img": np.array([[1.0]])})
    assert d["img"][0, 0] == 3.0


@pytest.mark.parametrize(
    "img, message",
    [
        (np.zeros((1, 2, 2)), "RescaleSlope (tag 00281053) / RescaleIntercept (tag 00281052)"),
        (MetaTensor(torch.zeros(1, 2), meta={"RescaleSlope": 1.0}), "no RescaleIntercept (tag 00281052)"),
    ],
    ids=["plain-array", "meta-without-intercept"],
)
def test_scale_to_hu_missing_tags(img, message):
    with pytest.raises(ValueError) as err:
        ScaleToHU()(img)
    assert message in str(err.value) and "slope=" in str(err.value)


@pytest.mark.parametrize(
    "kwargs", [{"slope": float("nan")}, {"intercept": float("inf")}, {"already_rescaled": "auto"}], ids=str
)
def test_scale_to_hu_argument_errors(kwargs):
    with pytest.raises(ValueError, match="must be"):
        ScaleToHU(**kwargs)


# ------------------------------------------------------------------------------------------------ real data
@pytest.mark.shared
def test_pydicom_reader_output_is_already_hu(shared_data):
    """MONAI 1.6.1 PydicomReader applies RescaleSlope/Intercept itself: ScaleToHU must not apply them again."""
    path = shared_data / CT_DIR / "1-15.dcm"
    ds = pydicom.dcmread(path)
    hu_ref = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    img = LoadImage(reader="PydicomReader", ensure_channel_first=True)(path)
    hu = ScaleToHU()(img)
    assert hu.meta[RESCALE_APPLIED_KEY] is True
    # the reader transposes to (x, y): compare against pydicom's (row, column) array transposed
    np.testing.assert_allclose(as_numpy(hu)[0], hu_ref.T, atol=1e-3)
    lung = HUWindow("lung")(hu)
    arr = as_numpy(lung)
    assert arr.min() >= 0.0 and arr.max() <= 1.0 and arr.max() > arr.min()
    air = float(HUWindow("lung")(np.array([[-1000.0]]))[0, 0])
    assert air == pytest.approx(350 / 1500, abs=1e-6) == pytest.approx(0.2333, abs=1e-4)
    # pixels at about -1000 HU (air) land at ~0.233 in the lung window
    near_air = np.abs(as_numpy(hu)[0] + 1000.0) < 1.0
    assert near_air.any()
    np.testing.assert_allclose(arr[0][near_air], 0.2333, atol=1e-3)


@pytest.mark.shared
def test_pipeline_load_hu_window(shared_data):
    path = shared_data / CT_DIR / "1-15.dcm"
    pipeline = Compose(
        [
            LoadImaged("image", reader="PydicomReader", ensure_channel_first=True),
            ScaleToHUd("image"),
            HUWindowd("image", "lung", output_range=(-1, 1)),
        ]
    )
    out = pipeline({"image": str(path)})["image"]
    assert isinstance(out, MetaTensor) and tuple(out.shape) == (1, 512, 512)
    assert float(out.min()) >= -1.0 and float(out.max()) <= 1.0
    # -1024 HU padding -> -1 + 2 * 326 / 1500
    assert float(out.min()) == pytest.approx(-1 + 2 * 326 / 1500, abs=1e-5)


@pytest.mark.shared
@pytest.mark.parametrize("rescale", [False, True], ids=["stored-values", "reader-rescaled"])
def test_clinical_dicom_reader_stored_values_converted_once(shared_data, rescale):
    """monai_synth's ClinicalDicomReader returns stored values + meta flag; ScaleToHU must reach the same HU."""
    path = shared_data / CT_DIR / "1-15.dcm"
    reference = ScaleToHU()(LoadImage(reader="PydicomReader", ensure_channel_first=True)(path))
    img = LoadImage(reader=ClinicalDicomReader(rescale=rescale), ensure_channel_first=True)(path)
    assert img.meta[RESCALE_APPLIED_KEY] is rescale
    hu = ScaleToHU()(img)
    np.testing.assert_allclose(as_numpy(hu), as_numpy(reference), atol=1e-3)
    np.testing.assert_allclose(as_numpy(ScaleToHU()(hu)), as_numpy(reference), atol=1e-3)
