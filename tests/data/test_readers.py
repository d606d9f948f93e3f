"""SimpleITKReader: registration, MONAI affine convention, and the same CT read three ways."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from helpers import CT_DIR
from monai.data import NibabelReader
from monai.transforms import EnsureChannelFirst, LoadImage, LoadImaged, Orientation
from monai.transforms.io.array import SUPPORTED_READERS

from monai_synth.data import SimpleITKReader, load_dicom

CT = CT_DIR
NII = "ct_nifti_totalsegmentator_example/example_ct_sm.nii.gz"


def _ras(img):
    return Orientation(axcodes="RAS", labels=None)(EnsureChannelFirst(channel_dim="no_channel")(img))


def test_ct_three_ways(shared_data, tmp_path):
    by_pydicom = load_dicom(shared_data / CT, rescale=True)
    by_sitk = LoadImage(reader="SimpleITKReader", image_only=True)(shared_data / CT)
    nii = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(by_pydicom.numpy().astype(np.int16), by_pydicom.affine.numpy()), nii)
    by_nibabel = LoadImage(reader=NibabelReader(), image_only=True)(nii)
    ref = _ras(by_pydicom)
    assert float(ref.min()) == -1024.0  # HU = stored - 1024 and stored >= 0
    for other in (by_sitk, by_nibabel):
        other = _ras(other)
        np.testing.assert_array_equal(other.numpy(), ref.numpy())
        np.testing.assert_allclose(other.affine.numpy(), ref.affine.numpy(), atol=1e-4)
        np.testing.assert_allclose(other.pixdim.numpy(), [0.841796875, 0.841796875, 5.0], atol=1e-5)
    assert by_sitk.meta["rescale_applied"] is True and by_sitk.meta["RescaleIntercept"] == -1024.0
    assert by_sitk.meta["Modality"] == "CT"


def test_nifti_sitk_matches_nibabel(shared_data):
    path = shared_data / NII
    a = LoadImage(reader="SimpleITKReader", image_only=True)(path)
    b = LoadImage(reader="NibabelReader", image_only=True)(path)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_allclose(a.affine.numpy(), b.affine.numpy(), atol=1e-4)
    np.testing.assert_allclose(a.meta["spacing"], [3.0, 3.0, 3.0], atol=1e-4)


def _oblique_image(dim: int, components: int = 1) -> sitk.Image:
    rng = np.random.default_rng(dim)
    shape = (5, 4, 3)[:dim][::-1] + ((components,) if components > 1 else ())  # numpy order (z, y, x[, c])
    img = sitk.GetImageFromArray(rng.integers(0, 1000, shape).astype(np.int16), isVector=components > 1)
    angle = 0.3
    if dim == 3:
        rot = [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
        img.SetSpacing((0.5, 0.75, 2.0))
        img.SetOrigin((10.0, -20.0, 30.0))
    else:
        rot = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
        img.SetSpacing((0.5, 0.75))
        img.SetOrigin((10.0, -20.0))
    img.SetDirection(np.asarray(rot).ravel().tolist())
    return img


@pytest.mark.parametrize("suffix,dim", [(".mha", 3), (".nrrd", 3), (".nii.gz", 3), (".mha", 2)])
def test_affine_and_index_closed_form(tmp_path, suffix, dim):
    img = _oblique_image(dim)
    path = tmp_path / f"img{suffix}"
    sitk.WriteImage(img, str(path))
    out = LoadImage(reader="SimpleITKReader", image_only=True)(path)
    direction = np.asarray(img.GetDirection()).reshape(dim, dim)
    lps = np.eye(dim + 1)
    lps[:dim, :dim] = direction @ np.diag(img.GetSpacing())
    lps[:dim, -1] = img.GetOrigin()
    ras = np.diag([-1, -1] + [1] * (dim - 1)) @ lps  # flip the first two axes
    np.testing.assert_allclose(out.affine.numpy(), ras, atol=1e-5)
    idx = (4, 1, 2)[:dim]
    assert float(out[idx]) == float(img.GetPixel(*idx))  # MONAI index order (x, y, z) = SimpleITK's


def test_vector_image_channel_last(tmp_path):
    img = _oblique_image(3, components=2)
    path = tmp_path / "vec.mha"
    sitk.WriteImage(img, str(path))
    out = LoadImage(reader="SimpleITKReader", image_only=True, ensure_channel_first=True)(path)
    assert tuple(out.shape) == (2, 5, 4, 3)
    assert float(out[1, 4, 1, 2]) == float(img.GetPixel(4, 1, 2)[1])


def test_registration_and_autoselect(tmp_path):
    assert SUPPORTED_READERS["simpleitkreader"] is SimpleITKReader
    path = tmp_path / "a.mha"
    sitk.WriteImage(_oblique_image(3), str(path))
    reader = SimpleITKReader()
    assert reader.verify_suffix(str(path)) and reader.verify_suffix("x.nii.gz")
    assert not reader.verify_suffix("x.dcm")  # DICOM stays with the DICOM readers unless asked for by name
    out = LoadImaged(keys="image")({"image": str(path)})  # no reader named: auto-selected by suffix
    assert out["image"].shape == (5, 4, 3)


def test_errors(tmp_path):
    reader = SimpleITKReader()
    with pytest.raises(FileNotFoundError, match="missing.mha"):
        reader.read(tmp_path / "missing.mha")
    bad = tmp_path / "bad.mha"
    bad.write_text("not an image")
    with pytest.raises(ValueError, match="bad.mha"):
        reader.read(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no DICOM series"):
        reader.read(tmp_path / "empty")
