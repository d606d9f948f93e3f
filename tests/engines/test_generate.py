"""Tests for synthetic dataset generation and the image writers."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from helpers import tiny_unet
from monai.networks.schedulers import DDIMScheduler
from monai.transforms import LoadImage
from PIL import Image

from monai_synth.data.writers import to_uint8, to_unit_range, write_nifti, write_png
from monai_synth.engines import generate_dataset, plan_class_counts
from monai_synth.engines.generate import GenerationSettingsError, model_fingerprint


def run(out, model=None, **kw):
    args = dict(
        num_per_class=[3, 2],
        image_size=8,
        formats=("png",),
        num_inference_steps=2,
        batch_size=2,
        seed=5,
        progress=False,
    )
    args.update(kw)
    return generate_dataset(model or tiny_unet(), DDIMScheduler(num_train_timesteps=10), out, **args)


@pytest.mark.parametrize(
    "name,kw,expected",
    [
        ("int", dict(num_per_class=4, num_classes=3), [4, 4, 4]),
        ("list", dict(num_per_class=[1, 0, 2]), [1, 0, 2]),
        ("ratio_exact", dict(class_ratio=[1, 3], total=8), [2, 6]),
        ("ratio_round", dict(class_ratio=[1, 1, 1], total=10), [4, 3, 3]),
    ],
)
def test_plan_class_counts(name, kw, expected):
    counts = plan_class_counts(**kw)
    assert counts == expected and sum(counts) == sum(expected)


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(), "exactly one"),
        (dict(num_per_class=2, class_ratio=[1]), "exactly one"),
        (dict(num_per_class=2), "num_classes"),
        (dict(class_ratio=[1, 1]), "total"),
        (dict(class_ratio=[-1, 2], total=3), "non-negative"),
        (dict(num_per_class=[1, 2], num_classes=3), "num_classes=3"),
    ],
)
def test_plan_class_counts_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        plan_class_counts(**kw)


def test_generate_counts_datalist_and_determinism(tmp_path):
    res = run(tmp_path / "a")
    assert res.counts == [3, 2] and res.written == 5 and res.skipped == 0
    for c, n in enumerate([3, 2]):
        assert len(list((tmp_path / "a" / "png" / f"class_{c}").glob("*.png"))) == n
    doc = json.loads((tmp_path / "a" / "datalist.json").read_text())
    assert [it["label"] for it in doc["training"]] == [0, 0, 0, 1, 1]
    assert all(not it["image"].startswith("/") and (tmp_path / "a" / it["image"]).is_file() for it in doc["training"])
    img = np.asarray(Image.open(tmp_path / "a" / doc["training"][0]["image"]))
    assert img.dtype == np.uint8 and img.shape == (8, 8)
    # same seed -> identical files; different seed -> different
    run(tmp_path / "b")
    run(tmp_path / "c", seed=6)
    for it in doc["training"]:
        assert (tmp_path / "a" / it["image"]).read_bytes() == (tmp_path / "b" / it["image"]).read_bytes()
    assert any(
        (tmp_path / "a" / it["image"]).read_bytes() != (tmp_path / "c" / it["image"]).read_bytes()
        for it in doc["training"]
    )


def test_generate_resume(tmp_path):
    full = run(tmp_path / "full")
    part = tmp_path / "part"
    run(part)
    files = sorted((part / "png").rglob("*.png"))
    removed = files[1]  # belongs to a batch whose other image survives
    reference = removed.read_bytes()
    removed.unlink()
    stale = removed.parent / f".{removed.name}.xyz.tmp"
    stale.write_bytes(b"half")  # leftover of a write killed by SIGKILL
    res = run(part)
    assert res.written == 1 and res.skipped == 4
    assert removed.read_bytes() == reference
    assert not stale.exists()
    assert full.written == 5


@pytest.mark.parametrize(
    "change,field",
    [
        (dict(guidance_scale=2.0), "guidance_scale"),  # the default is DiffusionRecipe.guidance_scale = 1
        (dict(num_inference_steps=3), "timesteps"),
        (dict(seed=6), "seed"),
        (dict(batch_size=3), "batch_size"),
        (dict(num_per_class=[2, 2]), "counts"),
        (dict(model=tiny_unet(seed=1)), "model"),
    ],
)
def test_generate_refuses_resume_with_other_settings(tmp_path, change, field):
    run(tmp_path)
    before = sorted(p.read_bytes() for p in (tmp_path / "png").rglob("*.png"))
    with pytest.raises(GenerationSettingsError, match=rf"{field}: existing .* vs now") as err:
        run(tmp_path, **change)
    assert str(tmp_path) in str(err.value) and "new folder" in str(err.value)
    assert sorted(p.read_bytes() for p in (tmp_path / "png").rglob("*.png")) == before  # nothing touched
    # the same settings (and an equal copy of the weights) still resume; a second format may be added
    assert run(tmp_path, model=tiny_unet()).skipped == 5
    assert run(tmp_path, formats=("png", "nifti")).written == 5


def test_generate_manifest_unreadable(tmp_path):
    run(tmp_path)
    (tmp_path / "generation.json").write_text("{not json")
    with pytest.raises(GenerationSettingsError, match="generation.json.*unreadable"):
        run(tmp_path)


def test_model_fingerprint():
    assert model_fingerprint(tiny_unet()) == model_fingerprint(tiny_unet())
    assert model_fingerprint(tiny_unet()) != model_fingerprint(tiny_unet(seed=1))
    m = tiny_unet()
    with torch.no_grad():
        next(m.parameters())[0].view(-1)[0] += 1e-6
    assert model_fingerprint(m) != model_fingerprint(tiny_unet())


def test_generate_unconditional(tmp_path):
    res = run(tmp_path, model=tiny_unet(None), num_per_class=[3])
    assert res.counts == [3] and len(list((tmp_path / "png" / "class_0").glob("*.png"))) == 3


def test_generate_dicom_and_nifti(tmp_path):
    from monai_synth.data.deid import check_deidentified

    res = run(tmp_path, formats=("dicom", "nifti", "png"), class_names=["normal", "pneumonia"])
    dcm = sorted((tmp_path / "dicom").rglob("*.dcm"))
    assert len(dcm) == 5 and len(list((tmp_path / "nifti").rglob("*.nii.gz"))) == 5
    datasets = [pydicom.dcmread(p) for p in dcm]
    source = pydicom.dcmread(_real_like_source(tmp_path))
    for ds in datasets:
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY"]
        assert str(ds.PatientName) == f"SYNTHETIC^{ds.PatientID}" and ds.PatientID.startswith("SYN")
        assert ds.BurnedInAnnotation == "NO" and ds.PatientIdentityRemoved == "YES"
        assert "SYNTHETIC" in ds.DeidentificationMethod
        assert ds.pixel_array.shape == (8, 8) and ds.pixel_array.dtype == np.uint8
        assert check_deidentified(ds, [source]) == []
    assert len({ds.SOPInstanceUID for ds in datasets}) == 5
    assert len({ds.StudyInstanceUID for ds in datasets}) == 1
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 2  # one series per class
    # pixels agree across formats (same sample written three ways)
    pairs = {p.name: p for p in (tmp_path / "png").rglob("*.png")}
    for ds, p in zip(datasets, dcm):
        png = np.asarray(Image.open(pairs[p.stem + ".png"]))
        assert np.array_equal(ds.pixel_array, png)
    loader = LoadImage(image_only=True)
    for name, p in pairs.items():
        nii = loader(str(next((tmp_path / "nifti").rglob(name.replace(".png", ".nii.gz")))))
        assert np.allclose(np.asarray(loader(str(p))) / 255.0, np.asarray(nii), atol=0.5 / 255 + 1e-6)
    assert set(res.datalists) == {"dicom", "nifti", "png"}


def _real_like_source(tmp_path):
    """A 'real' DICOM with identifiers, to check nothing leaks (written with pydicom's test helpers)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.1", ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "Doe^Jane", "PID12345", "19700101"
    ds.InstitutionName = "General Hospital"
    path = tmp_path / "source.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_writers_values(tmp_path):
    x = torch.tensor([[[-1.0, 0.0], [1.0, 2.0]]])
    unit = to_unit_range(x)
    assert np.allclose(unit, [[[0.0, 0.5], [1.0, 1.0]]])
    assert to_uint8(unit).tolist() == [[[0, 128], [255, 255]]]
    write_png(unit, tmp_path / "a.png")
    assert np.asarray(Image.open(tmp_path / "a.png")).tolist() == [[0, 128], [255, 255]]
    write_nifti(unit, tmp_path / "a.nii.gz")
    assert np.allclose(nib.load(tmp_path / "a.nii.gz").get_fdata(), unit[0].T)
    with pytest.raises(ValueError, match="single-channel"):
        write_png(np.zeros((3, 2, 2)), tmp_path / "b.png")
    with pytest.raises(ValueError, match="formats"):
        run(tmp_path / "x", formats=("jpeg",))
