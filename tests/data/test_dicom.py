"""ClinicalDicomReader / load_dicom: values against pydicom, series order, MONOCHROME1, multi-frame, error paths."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from helpers import CT_DIR, CXR_J2K
from monai.transforms import LoadImage, LoadImaged
from monai.transforms.io.array import SUPPORTED_READERS
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import JPEG2000, generate_uid

from monai_synth.data import ClinicalDicomReader, DicomReadError, load_dicom, make_demo_images, write_demo_dicom

CT, RG1 = CT_DIR, CXR_J2K


@pytest.fixture(scope="module")
def ct_files(shared_data) -> list[Path]:
    return sorted((shared_data / CT).glob("*.dcm"))


@pytest.fixture(scope="module")
def ct_stored(shared_data):
    return load_dicom(shared_data / CT)


def _z(path: Path) -> float:
    return float(pydicom.dcmread(path, stop_before_pixels=True).ImagePositionPatient[2])


def test_ct_series_geometry_and_meta(ct_stored):
    assert tuple(ct_stored.shape) == (512, 512, 16)
    np.testing.assert_allclose(ct_stored.meta["spacing"], [0.841796875, 0.841796875, 5.0], atol=1e-6)
    assert ct_stored.meta["Modality"] == "CT"
    assert ct_stored.meta["RescaleSlope"] == 1.0 and ct_stored.meta["RescaleIntercept"] == -1024.0
    assert ct_stored.meta["00281052"]["Value"] == [-1024.0]
    assert ct_stored.meta["rescale_applied"] is False
    # ascending position along the normal: first slice at z=-244, slice step +5 mm (RAS affine, z unchanged)
    np.testing.assert_allclose(ct_stored.affine[2, 2:4].numpy(), [5.0, -244.0])
    np.testing.assert_allclose(ct_stored.affine[0, 0].item(), -0.841796875)  # LPS -> RAS flips x


@pytest.mark.parametrize("row,col,instance", [(200, 300, 17), (256, 256, 10), (100, 400, 25)])
def test_ct_hu_equals_stored_minus_1024(shared_data, ct_files, ct_stored, row, col, instance):
    path = shared_data / CT / f"1-{instance}.dcm"
    stored = int(pydicom.dcmread(path).pixel_array[row, col])
    k = sorted(_z(f) for f in ct_files).index(_z(path))
    hu = load_dicom(shared_data / CT, rescale=True)
    assert hu.meta["rescale_applied"] is True
    assert float(ct_stored[col, row, k]) == stored  # swap_ij: axis 0 is the DICOM column
    assert float(hu[col, row, k]) == stored - 1024


def test_series_order_ignores_file_names(tmp_path, ct_files, ct_stored):
    rng = np.random.default_rng(0)
    names = [f"{n:02d}.dcm" for n in rng.permutation(len(ct_files))]  # shuffled names: name order != z order
    for src, name in zip(ct_files, names):
        shutil.copy(src, tmp_path / name)
    vol = load_dicom(tmp_path)
    np.testing.assert_array_equal(vol.numpy(), ct_stored.numpy())
    by_z = sorted(ct_files, key=_z)
    for k in (0, 7, 15):
        np.testing.assert_array_equal(vol[..., k].numpy(), pydicom.dcmread(by_z[k]).pixel_array.T)


def test_series_folder_by_preamble_not_name(tmp_path, ct_files, ct_stored):
    """PACS exports: extensionless and vendor-suffixed (``.IMA``) slices are found by the DICM preamble; a README,
    a hidden copy and a non-DICOM ``.txt`` in the folder are skipped, not read as slices."""
    from monai_synth.data.dicom import is_dicom_file

    for i, src in enumerate(ct_files):
        shutil.copy(src, tmp_path / (f"IM{i:04d}" if i % 2 else f"IM{i:04d}.IMA"))
    (tmp_path / "README").write_text("exported by a PACS\n" * 20)
    (tmp_path / "notes.txt").write_text("x" * 200)
    shutil.copy(ct_files[0], tmp_path / ".IM0000")
    np.testing.assert_array_equal(load_dicom(tmp_path).numpy(), ct_stored.numpy())
    assert not is_dicom_file(tmp_path / "README") and not is_dicom_file(tmp_path / ".IM0000")
    assert is_dicom_file(tmp_path / "IM0001") and is_dicom_file(tmp_path / "IM0000.IMA")
    assert not is_dicom_file(tmp_path) and not is_dicom_file(tmp_path / "missing.dcm")


def test_monochrome1_inverted(shared_data):
    ds = pydicom.dcmread(shared_data / RG1)
    assert ds.PhotometricInterpretation == "MONOCHROME1" and ds.file_meta.TransferSyntaxUID == JPEG2000
    stored = ds.pixel_array.astype(np.int64)
    img = load_dicom(shared_data / RG1)
    assert img.meta["monochrome1_inverted"] is True and img.meta["PhotometricInterpretation"] == "MONOCHROME1"
    np.testing.assert_array_equal(img.numpy().T, (2**ds.BitsStored - 1) - stored)
    raw = load_dicom(shared_data / RG1, invert_monochrome1=False)
    np.testing.assert_array_equal(raw.numpy().T, stored)
    assert raw.meta["monochrome1_inverted"] is False


@pytest.mark.parametrize("name", ["sfm-benign-0/1-130.dcm", "sfm-malign-0/1-282.dcm"])
def test_mammogram_rle(shared_data, name):
    path = shared_data / "mammography_cbis_ddsm" / name
    img = load_dicom(path)
    assert img.meta["Modality"] == "MG"
    ref = pydicom.dcmread(path).pixel_array
    assert tuple(img.shape) == ref.shape[::-1]
    np.testing.assert_array_equal(img[::97, ::89].numpy(), ref.T[::97, ::89])


def test_missing_decoder_names_package(shared_data, monkeypatch):
    decoder = pydicom.pixels.get_decoder(JPEG2000)
    monkeypatch.setattr(decoder, "_available", {})
    with pytest.raises(DicomReadError, match=r"RG1_J2KI\.dcm.*pip install pylibjpeg pylibjpeg-openjpeg"):
        load_dicom(shared_data / RG1)


def test_registered_name_and_dict_transform(tmp_path):
    path = write_demo_dicom(tmp_path / "a.dcm", make_demo_images("ct", 1, 16, 0).images[0], "ct")
    assert next(iter(SUPPORTED_READERS)) == "clinicaldicomreader"  # first entry: never auto-selected
    img = LoadImage(reader="ClinicalDicomReader", image_only=True, rescale=True)(path)
    assert isinstance(LoadImage(reader="ClinicalDicomReader").readers[-1], ClinicalDicomReader)
    out = LoadImaged(keys="image", reader="ClinicalDicomReader")({"image": str(path)})
    np.testing.assert_array_equal(out["image"].numpy() - 1024, img.numpy())


def _write_multiframe(path: Path, frames: np.ndarray, enhanced: bool) -> None:
    ds = pydicom.dcmread(write_demo_dicom(path, frames[0], "ct"))
    ds.NumberOfFrames = len(frames)
    ds.PixelData = np.ascontiguousarray(frames, dtype=np.uint16).tobytes()
    if enhanced:
        for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness"):
            delattr(ds, tag)
        shared, measures, orient = pydicom.Dataset(), pydicom.Dataset(), pydicom.Dataset()
        measures.PixelSpacing, measures.SliceThickness, measures.SpacingBetweenSlices = [0.5, 0.5], 2.0, 2.0
        orient.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = [measures], [orient]
        ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
        per_frame = []
        for k in range(len(frames)):
            item, pos = pydicom.Dataset(), pydicom.Dataset()
            pos.ImagePositionPatient = [0.0, 0.0, 2.0 * k]
            item.PlanePositionSequence = [pos]
            per_frame.append(item)
        ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    ds.save_as(path, enforce_file_format=True)


@pytest.mark.parametrize("enhanced", [False, True], ids=["plain", "enhanced"])
def test_multiframe_frames_last(tmp_path, enhanced):
    frames = make_demo_images("ct", 2, 16, 1).images  # 4 distinct frames
    _write_multiframe(tmp_path / "mf.dcm", frames, enhanced)
    img = load_dicom(tmp_path / "mf.dcm")
    assert tuple(img.shape) == (16, 16, 4)
    for k in range(4):
        np.testing.assert_array_equal(img[..., k].numpy(), frames[k].T)
    if enhanced:
        np.testing.assert_allclose(img.meta["spacing"], [0.5, 0.5, 2.0])


def _demo_file(path: Path, size: int = 16, series_uid: str | None = None, z: float = 0.0) -> Path:
    write_demo_dicom(path, make_demo_images("ct", 1, size, 0).images[0], "ct", series_uid=series_uid)
    ds = pydicom.dcmread(path)
    ds.ImagePositionPatient = [0.0, 0.0, z]
    ds.save_as(path, enforce_file_format=True)
    return path


def _truncated(tmp_path: Path) -> Path:
    path = _demo_file(tmp_path / "trunc.dcm")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 200])
    return path


def _no_pixels(tmp_path: Path) -> Path:
    path = _demo_file(tmp_path / "nopix.dcm")
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path, enforce_file_format=True)
    return path


def _text_as_dcm(tmp_path: Path) -> Path:
    path = tmp_path / "notes.dcm"
    path.write_text("this is not DICOM\n" * 20)
    return path


def _random_bytes(tmp_path: Path) -> Path:
    path = tmp_path / "noise.dcm"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 600, dtype=np.uint8).tobytes())
    return path


def _empty_folder(tmp_path: Path) -> Path:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.txt").write_text("no images")
    return tmp_path / "empty"


def _mixed_series(tmp_path: Path) -> Path:
    folder = tmp_path / "mixed"
    folder.mkdir()
    _demo_file(folder / "s1.dcm", series_uid=generate_uid(), z=0.0)
    _demo_file(folder / "s2.dcm", series_uid=generate_uid(), z=5.0)
    return folder


def _mixed_sizes(tmp_path: Path) -> Path:
    folder, uid = tmp_path / "sizes", generate_uid()
    folder.mkdir()
    _demo_file(folder / "small.dcm", size=16, series_uid=uid, z=0.0)
    _demo_file(folder / "large.dcm", size=32, series_uid=uid, z=5.0)
    return folder


def _same_position(tmp_path: Path) -> Path:
    folder, uid = tmp_path / "dup", generate_uid()
    folder.mkdir()
    _demo_file(folder / "a.dcm", series_uid=uid, z=0.0)
    _demo_file(folder / "b.dcm", series_uid=uid, z=0.0)
    return folder


@pytest.mark.parametrize(
    "make,pattern",
    [
        (_truncated, r"trunc\.dcm.*(truncated|corrupt)"),
        (_no_pixels, r"nopix\.dcm.*no PixelData"),
        (_text_as_dcm, r"notes\.dcm.*not a readable DICOM"),
        (_random_bytes, r"noise\.dcm.*not a readable DICOM"),
        (_empty_folder, r"empty.*holds no DICOM files"),
        (_mixed_series, r"mixed.*mixes 2 series.*s1\.dcm.*s2\.dcm"),
        (_mixed_sizes, r"sizes.*different sizes.*(small|large)\.dcm"),
        (_same_position, r"a\.dcm.*b\.dcm.*same slice position"),
    ],
    ids=["truncated", "no_pixeldata", "text_named_dcm", "random_bytes", "empty", "mixed_series", "sizes", "dup_pos"],
)
def test_errors_name_the_file(tmp_path, make, pattern):
    with pytest.raises(DicomReadError, match=pattern):
        load_dicom(make(tmp_path))


@pytest.mark.parametrize("make", [_mixed_series, _text_as_dcm], ids=["mixed_series", "text_named_dcm"])
def test_load_image_by_name_keeps_error_type(tmp_path, make):
    # LoadImage retries other readers when read() raises; the reader defers errors so none silently succeeds
    with pytest.raises(DicomReadError):
        LoadImage(reader="ClinicalDicomReader")(make(tmp_path))


def test_missing_path_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.dcm"):
        load_dicom(tmp_path / "nope.dcm")
    assert issubclass(DicomReadError, ValueError)
