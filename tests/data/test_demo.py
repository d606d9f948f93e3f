"""Built-in demo data: determinism, DICOM validity, read-back through pydicom and MONAI, lesion localisation."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pydicom
import pytest
from monai.data import load_decathlon_datalist
from monai.transforms import LoadImage
from pydicom.uid import ExplicitVRLittleEndian

from monai_synth.data import DEMO_KINDS, ClinicalDicomReader, make_demo_dataset, make_demo_images, make_demo_pair

MODALITY = {"cxr": "CR", "ct": "CT", "mg": "MG"}


@pytest.mark.parametrize("kind", DEMO_KINDS)
def test_deterministic_by_seed(kind):
    a, b, c = (make_demo_images(kind, 3, 24, seed) for seed in (5, 5, 6))
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.images, c.images)
    assert a.images.dtype == np.uint16 and a.images.shape == (6, 24, 24) and a.images.max() <= 4095
    assert sorted(a.labels.tolist()) == [0, 0, 0, 1, 1, 1]


# (kind, minimum peak lesion contrast in stored units, maximum lesion area fraction)
@pytest.mark.parametrize("kind,min_peak,max_area", [("cxr", 300, 0.35), ("ct", 400, 0.05), ("mg", 400, 0.1)])
def test_finding_is_local_and_visible(kind, min_peak, max_area):
    """Same anatomy with and without the finding: they differ only in a small, brighter region."""
    for seed in range(3):
        normal, abnormal = make_demo_pair(kind, 64, seed)
        diff = abnormal.astype(np.int64) - normal.astype(np.int64)
        noise = 0.015 * 4095 if kind != "ct" else 20.0
        assert diff.max() >= min_peak > 10 * noise / 3  # well above the per-pixel noise
        assert (np.abs(diff) > noise).mean() <= max_area
        assert (diff >= 0).all()  # findings are denser than the tissue they replace


def test_mg_mass_is_resolved_at_the_main_job_size():
    """At the main job's 32 px every demo mass covers a few pixels clearly above the noise (not a single speck)."""
    areas = []
    for seed in range(20):
        normal, abnormal = make_demo_pair("mg", 32, seed)
        diff = abnormal.astype(np.int64) - normal.astype(np.int64)
        areas.append(int((diff > 0.1 * 4095).sum()))  # pixels at least 0.1 of full scale brighter (~8x the noise)
    assert min(areas) >= 6 and np.median(areas) >= 10
    assert max(areas) <= 0.05 * 32 * 32  # still a local finding


def test_ct_intensities_are_hu_plausible():
    hu = make_demo_images("ct", 4, 64, 0).images.astype(np.int64) - 1024
    assert np.median(hu[:, 0, :]) < -900  # air at the border
    assert ((hu > -950) & (hu < -700)).mean() > 0.1  # aerated lung
    assert (hu > 300).any()  # bone


@pytest.mark.parametrize("kind", DEMO_KINDS)
def test_dataset_files_and_datalist(tmp_path, kind):
    splits = make_demo_dataset(tmp_path, kind, n_per_class=20, size=32, seed=1)
    ref = make_demo_images(kind, 20, 32, 1)
    counts = {k: Counter(i["label"] for i in v) for k, v in splits.items()}  # default ratios 0.7/0.15/0.15
    assert counts == {"training": {0: 14, 1: 14}, "validation": {0: 3, 1: 3}, "test": {0: 3, 1: 3}}
    items = sorted((i for v in splits.values() for i in v), key=lambda i: i["id"])
    assert [i["label"] for i in items] == ref.labels.tolist()
    ds = pydicom.dcmread(items[3]["image"])  # no force=True: valid preamble + file meta
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.Modality == MODALITY[kind] and str(ds.PatientName) == "DEMO^SYNTHETIC"
    assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.BitsStored == 12
    np.testing.assert_array_equal(ds.pixel_array, ref.images[3])
    img = LoadImage(reader=ClinicalDicomReader(rescale=True), image_only=True)(items[3]["image"])
    offset = -1024 if kind == "ct" else 0
    np.testing.assert_array_equal(img.numpy().T, ref.images[3].astype(np.float32) + offset)
    assert img.meta["Modality"] == MODALITY[kind]
    for key, expected in splits.items():
        assert load_decathlon_datalist(str(tmp_path / "datalist.json"), data_list_key=key) == [
            {k: v for k, v in i.items()} for i in expected
        ]


def test_uids_fresh_unless_deterministic(tmp_path):
    def uids(sub, **kw):
        splits = make_demo_dataset(tmp_path / sub, "cxr", n_per_class=1, size=16, seed=0, **kw)
        return sorted(pydicom.dcmread(i["image"]).SOPInstanceUID for v in splits.values() for i in v)

    assert uids("a") != uids("b")
    assert uids("c", deterministic_uids=True) == uids("d", deterministic_uids=True)


@pytest.mark.parametrize(
    "kwargs,pattern",
    [({"kind": "pet"}, "`kind` must be one of"), ({"n_per_class": 0}, "n_per_class"), ({"size": 8}, "size")],
)
def test_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        make_demo_images(**kwargs)
