"""The one labelled-split loader (every DataSource), grouped_split, the one image loader, resizing, value ranges.

Values are checked against independent references: the arrays written with PIL / pydicom / nibabel / numpy, hand
computations, and PIL's resampling.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from helpers import write_medmnist_npz
from PIL import Image

from monai_synth.data import (
    SPLITS,
    from_unit_range,
    grouped_split,
    items_from_arrays,
    load_image_2d,
    load_labelled_splits,
    patient_of,
    resize_images,
    to_unit_range,
    write_datalist_json,
    write_demo_dicom,
    write_nifti,
)
from monai_synth.utils.enums import DataSource

S = 8  # image size of the marker images


def _marker(k: int, high: int = 255, dtype=np.uint8) -> np.ndarray:
    """An S x S image that is zero except pixel ``k`` (row-major): after min-max scaling it identifies image ``k``."""
    a = np.zeros((S, S), dtype)
    a.flat[k] = high
    return a


def _ids(items: list[dict]) -> list[int]:
    """The marker of each loaded item (checks the image is exactly the one-hot marker image)."""
    out = []
    for it in items:
        img = it["image"]
        assert img.shape == (1, S, S) and img.dtype == np.float32
        k = int(np.argmax(img[0]))
        np.testing.assert_allclose(img[0], _marker(k) / 255.0, atol=1e-6)
        out.append(k)
    return out


def _assert_patients_disjoint(splits: dict[str, list[dict]], patient_of_id: dict[int, str]) -> None:
    where: dict[str, set[str]] = {}
    for split, items in splits.items():
        for k in _ids(items):
            where.setdefault(patient_of_id[k], set()).add(split)
    shared = {p: s for p, s in where.items() if len(s) > 1}
    assert not shared, f"patients in more than one split: {shared}"


def test_every_data_source_has_a_test_here():
    assert {m.value for m in DataSource} == {"demo", "medmnist", "folder", "datalist", "dicom"}
    assert SPLITS == ("train", "val", "test")


# ------------------------------------------------------------------------------------------------ demo
@pytest.mark.parametrize("kind", ["cxr", "ct"])
def test_demo_source_writes_dicom_studies_and_splits_them(tmp_path, kind):
    splits = load_labelled_splits("demo", image_size=16, work_dir=tmp_path, demo_kind=kind, demo_n_per_class=10,
                                  demo_size=16, seed=3)  # fmt: skip
    sizes = {k: len(v) for k, v in splits.items()}
    assert sizes["train"] == 14 and sizes["val"] + sizes["test"] == 6 and min(sizes.values()) >= 2  # 70/15/15
    for v in splits.values():
        assert Counter(it["label"] for it in v).keys() == {0, 1}  # stratified: both classes in every split
    files = sorted((tmp_path / "demo_data").glob("*.dcm"))
    assert len(files) == 20 and (tmp_path / "demo_data" / "datalist.json").is_file()
    datalist = json.loads((tmp_path / "demo_data" / "datalist.json").read_text())
    # one patient per study: no patient in two splits
    patients = {key: {patient_of(tmp_path / "demo_data" / it["image"]) for it in datalist[key]}
                for key in ("training", "validation", "test")}  # fmt: skip
    assert sum(len(p) for p in patients.values()) == 20 and None not in set().union(*patients.values())
    # the first training item is the first training study, rows first, scaled (independent: pydicom)
    ds = pydicom.dcmread(tmp_path / "demo_data" / datalist["training"][0]["image"])
    stored = ds.pixel_array.astype(np.float64)
    if kind == "ct":  # lung window by default for CT: HU = stored - 1024, L -600 W 1500 -> [-1350, 150] -> [0, 1]
        expected = np.clip((stored - 1024 + 1350) / 1500, 0, 1)
    else:
        expected = (stored - stored.min()) / (stored.max() - stored.min())
    first = splits["train"][0]
    assert first["label"] == datalist["training"][0]["label"]
    assert first["image"].shape == (1, 16, 16) and first["image"].dtype == np.float32
    np.testing.assert_allclose(first["image"][0], expected, atol=1e-5)


# ------------------------------------------------------------------------------------------------ medmnist
def test_medmnist_source_scales_and_resizes(tmp_path):
    arrays = write_medmnist_npz(tmp_path / "d.npz", n=12, shape=(8, 8))
    splits = load_labelled_splits("medmnist", tmp_path / "d.npz", image_size=8)
    assert set(splits) == set(SPLITS) and all(len(v) == 12 for v in splits.values())
    for split in SPLITS:
        stack = np.stack([it["image"] for it in splits[split]])
        assert stack.shape == (12, 1, 8, 8) and stack.dtype == np.float32
        np.testing.assert_allclose(stack[:, 0], arrays[f"{split}_images"] / 255.0, atol=1e-6)  # not min-maxed
        assert [it["label"] for it in splits[split]] == [i % 2 for i in range(12)]
    resized = load_labelled_splits(DataSource.MEDMNIST, tmp_path / "d.npz", image_size=4)
    assert resized["val"][0]["image"].shape == (1, 4, 4)
    assert all(0.0 <= it["image"].min() and it["image"].max() <= 1.0 for it in resized["val"])


def test_medmnist_rgb_becomes_grayscale(tmp_path):
    arrays = write_medmnist_npz(tmp_path / "rgb.npz", n=4, shape=(8, 8), channels=3)
    splits = load_labelled_splits("medmnist", tmp_path / "rgb.npz", image_size=8)
    np.testing.assert_allclose(splits["test"][2]["image"][0], arrays["test_images"][2].mean(-1) / 255.0, atol=1e-6)


# ------------------------------------------------------------------------------------------------ folder
def _write_folder(root: Path, layout: dict[str, list[tuple[str, int, str]]]) -> None:
    """``layout[split] = [(class, marker k, suffix)]`` -> ``root/<split>/<class>/x<k><suffix>``."""
    for split, entries in layout.items():
        for cls, k, suffix in entries:
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(_marker(k)).save(root / split / cls / f"x{k:02d}{suffix}", quality=100)


def test_folder_source_reads_png_jpg_jpeg_rows_first(tmp_path):
    _write_folder(tmp_path, {
        "train": [("a", 0, ".png"), ("b", 1, ".png"), ("a", 2, ".png"), ("b", 3, ".png")],
        "valid": [("a", 4, ".jpg"), ("b", 5, ".jpg")],
        "test": [("a", 6, ".jpeg"), ("b", 7, ".JPEG")],
    })  # fmt: skip
    splits = load_labelled_splits("folder", tmp_path, image_size=S)
    assert {k: len(v) for k, v in splits.items()} == {"train": 4, "val": 2, "test": 2}
    assert _ids(splits["train"]) == [0, 2, 1, 3]  # sorted by class, then by name
    assert [it["label"] for it in splits["train"]] == [0, 0, 1, 1]  # a -> 0, b -> 1
    for split, expected in (("val", [4, 5]), ("test", [6, 7])):  # JPEG: lossy, so compare within a tolerance
        for it, k in zip(splits[split], expected):
            assert it["image"].shape == (1, S, S) and int(np.argmax(it["image"][0])) == k
            np.testing.assert_allclose(it["image"][0], _marker(k) / 255.0, atol=0.1)


def test_folder_image_stays_upright(tmp_path):
    img = np.zeros((12, 12), np.uint8)
    img[0, 1:] = 255  # top row bright
    img[1:, 0] = 128  # left column grey: a transpose or a flip would move either
    for split in ("train", "valid", "test"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            Image.fromarray(img).save(tmp_path / split / cls / "x.png")
    x = load_labelled_splits("folder", tmp_path, image_size=12)["val"][0]["image"][0]
    np.testing.assert_allclose(x, img / 255.0, atol=1e-6)  # the array written, rows first


def test_folder_without_valid_carves_val_from_train_by_patient(tmp_path):
    # 24 train images of 8 patients (3 images each, one class per patient), 4 test images of 2 other patients
    train = [("a" if k // 3 % 2 == 0 else "b", k, ".png") for k in range(24)]
    test = [("a", 24, ".png"), ("a", 25, ".png"), ("b", 26, ".png"), ("b", 27, ".png")]
    _write_folder(tmp_path, {"train": train, "test": test})
    patient = {k: f"P{k // 3}" for k in range(24)} | {24: "T0", 25: "T0", 26: "T1", 27: "T1"}
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "patient"])
        for split, entries in (("train", train), ("test", test)):
            for cls, k, suffix in entries:
                w.writerow([f"{split}/{cls}/x{k:02d}{suffix}", patient[k]])
    splits = load_labelled_splits("folder", tmp_path, image_size=S, val_fraction=0.25, seed=1)
    assert sorted(_ids(splits["train"]) + _ids(splits["val"])) == list(range(24))  # val comes out of train
    assert sorted(_ids(splits["test"])) == [24, 25, 26, 27]
    assert len(splits["val"]) == 6 and Counter(it["label"] for it in splits["val"]) == {0: 3, 1: 3}  # 25 %, per class
    _assert_patients_disjoint(splits, patient)
    again = load_labelled_splits("folder", tmp_path, image_size=S, val_fraction=0.25, seed=1)
    assert _ids(again["val"]) == _ids(splits["val"])  # deterministic for a seed


def test_folder_warns_about_a_patient_in_two_given_splits(tmp_path, caplog):
    _write_folder(tmp_path, {"train": [("a", 0, ".png"), ("b", 1, ".png")], "valid": [("a", 2, ".png")],
                             "test": [("b", 3, ".png")]})  # fmt: skip
    (tmp_path / "labels.csv").write_text("path,patient\ntrain/a/x00.png,P0\ntrain/b/x01.png,P1\n"
                                         "valid/a/x02.png,P2\ntest/b/x03.png,P0\n")  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="monai_synth.data.splits"):
        splits = load_labelled_splits("folder", tmp_path, image_size=S)
    assert _ids(splits["test"]) == [3]  # given splits are kept as they are
    assert "more than one split" in caplog.text and "P0" in caplog.text


# ------------------------------------------------------------------------------------------------ datalist
def test_datalist_source_keeps_lists_order_and_orientation(tmp_path):
    lists = {"training": [0, 1, 2, 3], "validation": [4, 5], "test": [6, 7]}
    datalist = {}
    for key, ks in lists.items():
        entries = []
        for k in ks:
            Image.fromarray(_marker(k)).save(tmp_path / f"m{k}.png")
            entries.append({"image": str(tmp_path / f"m{k}.png"), "label": k % 3})
        datalist[key] = entries[::-1]  # not sorted: the order of the file is kept
    write_datalist_json(datalist, tmp_path / "dl.json")
    splits = load_labelled_splits("datalist", tmp_path / "dl.json", image_size=S)
    for split, key in (("train", "training"), ("val", "validation"), ("test", "test")):
        assert _ids(splits[split]) == lists[key][::-1]
        assert [it["label"] for it in splits[split]] == [k % 3 for k in lists[key][::-1]]


# ------------------------------------------------------------------------------------------------ dicom
def _dicom_studies(root: Path, n: int = 20) -> dict[int, str]:
    """``n`` single-image studies ``s<k>`` (one in a series folder), two per patient; returns {k: PatientID}."""
    root.mkdir(parents=True)
    patients = {}
    for k in range(n):
        path = root / f"s{k:02d}.dcm" if k else root / "s00" / "1.dcm"
        path.parent.mkdir(exist_ok=True)
        write_demo_dicom(path, _marker(k, 1000, np.uint16), "cxr", index=k // 2)  # PatientID DEMO<k // 2>
        patients[k] = f"DEMO{k // 2:05d}"
    return patients


@pytest.mark.parametrize("patient_column", [True, False], ids=["csv-patient", "dicom-patient-id"])
def test_dicom_source_splits_by_patient(tmp_path, patient_column):
    patients = _dicom_studies(tmp_path / "studies")
    assert patient_of(tmp_path / "studies" / "s01.dcm") == "DEMO00000"
    assert patient_of(tmp_path / "studies" / "s00") == "DEMO00000"  # a series folder: its first file
    csv_patients = {k: f"C{k // 2}" for k in patients}  # differs from the DICOM PatientID: the CSV wins
    label = {k: (k // 2) % 2 for k in patients}  # one class per patient, 5 patients per class
    lines = ["id,label" + (",patient" if patient_column else "")]
    lines += [f"s{k:02d},{label[k]}" + (f",{csv_patients[k]}" if patient_column else "") for k in patients]
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    splits = load_labelled_splits("dicom", tmp_path / "studies", image_size=S, labels_csv=tmp_path / "labels.csv")
    assert sorted(sum((_ids(v) for v in splits.values()), [])) == list(range(20))
    assert all(splits[s] for s in SPLITS)
    for split in SPLITS:
        assert [it["label"] for it in splits[split]] == [label[k] for k in _ids(splits[split])]
        assert Counter(it["label"] for it in splits[split]).keys() == {0, 1}  # stratified by label
    assert len(splits["train"]) > len(splits["val"]) and len(splits["train"]) > len(splits["test"])
    _assert_patients_disjoint(splits, csv_patients if patient_column else patients)


def test_dicom_without_patient_ids_splits_images_one_by_one(tmp_path, caplog):
    root = tmp_path / "studies"
    root.mkdir()
    for k in range(10):
        path = write_demo_dicom(root / f"s{k}.dcm", _marker(k, 1000, np.uint16), "cxr")
        ds = pydicom.dcmread(path)
        del ds.PatientID
        ds.save_as(path)
        assert patient_of(path) is None
    (tmp_path / "labels.csv").write_text("id,label\n" + "".join(f"s{k},{k % 2}\n" for k in range(10)))
    with caplog.at_level(logging.WARNING, logger="monai_synth.data.splits"):
        splits = load_labelled_splits("dicom", root, image_size=S, labels_csv=tmp_path / "labels.csv")
    assert "no patient id is known" in caplog.text
    assert sorted(sum((_ids(v) for v in splits.values()), [])) == list(range(10))


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"source": "nope"}, r"`data_source` must be one of \['demo', 'medmnist', 'folder', 'datalist', 'dicom'\]"),
        ({"source": "medmnist", "path": None}, "`data_path` is required for data_source='medmnist'"),
        ({"source": "folder"}, "`data_path` is required for data_source='folder'"),
        ({"source": "dicom", "path": "."}, "labels_csv"),
    ],
    ids=["unknown-source", "medmnist-without-path", "folder-without-path", "dicom-without-csv"],
)
def test_load_errors_name_the_option(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_labelled_splits(**kwargs)


def test_folder_without_train_or_test_is_an_error(tmp_path):
    _write_folder(tmp_path, {"train": [("a", 0, ".png")]})
    with pytest.raises(ValueError, match="no 'test' split folder"):
        load_labelled_splits("folder", tmp_path, image_size=S)


def test_items_from_arrays():
    images = np.arange(2 * 1 * 2 * 2, dtype=np.float64).reshape(2, 1, 2, 2)
    items = items_from_arrays(images, np.array([1, 0]))
    assert [it["label"] for it in items] == [1, 0] and all(type(it["label"]) is int for it in items)
    assert items[1]["image"].dtype == np.float32 and np.array_equal(items[1]["image"], images[1])


# ------------------------------------------------------------------------------------------------ grouped_split
def _grouped_items(seed: int = 0) -> list[dict]:
    """40 patients with 1-4 images each; a patient's images share its label; 30 % of patients are label 1."""
    rng = np.random.default_rng(seed)
    items = []
    for p in range(40):
        label = int(p % 10 < 3)
        items += [{"image": f"{p}/{i}", "label": label, "patient": f"P{p}"} for i in range(int(rng.integers(1, 5)))]
    return items


def test_grouped_split_keeps_patients_whole_and_meets_ratios():
    items = _grouped_items()
    parts = grouped_split(items, (0.7, 0.15, 0.15), seed=0)
    assert len(parts) == 3
    assert sorted(it["image"] for part in parts for it in part) == sorted(it["image"] for it in items)  # partition
    owner: dict[str, set[int]] = {}
    for i, part in enumerate(parts):
        for it in part:
            owner.setdefault(it["patient"], set()).add(i)
    assert all(len(s) == 1 for s in owner.values()), "a patient is split across parts"
    n = len(items)
    for part, ratio in zip(parts, (0.7, 0.15, 0.15)):
        assert abs(len(part) - ratio * n) <= 2 * 4  # within two patients (at most 4 images each) per class
    overall = np.mean([it["label"] for it in items])
    for part in parts:
        assert abs(np.mean([it["label"] for it in part]) - overall) < 0.15  # class proportions kept


def test_grouped_split_is_deterministic_and_seeded():
    items = _grouped_items()
    a = grouped_split(items, (0.7, 0.15, 0.15), seed=5)
    assert grouped_split(items, (0.7, 0.15, 0.15), seed=5) == a
    assert grouped_split(items, (0.7, 0.15, 0.15), seed=6) != a
    assert items == _grouped_items()  # the input is not modified


def test_grouped_split_without_groups_and_other_key():
    items = [{"image": i, "label": i % 2} for i in range(20)]  # no patient: every image is its own group
    train, test = grouped_split(items, (0.5, 0.5), seed=0)
    assert len(train) == len(test) == 10 and Counter(it["label"] for it in test) == {0: 5, 1: 5}
    grouped = [{"image": i, "label": 0, "case": i // 5} for i in range(20)]
    parts = grouped_split(grouped, (0.5, 0.5), seed=0, group_key="case")
    assert sorted(len(p) for p in parts) == [10, 10]
    assert all(len({it["case"] for it in p} & {it["case"] for it in q}) == 0 for p, q in [parts])


@pytest.mark.parametrize("ratios", [(), (0.5, -0.1), (0.0, 0.0)])
def test_grouped_split_bad_ratios(ratios):
    with pytest.raises(ValueError, match="`ratios` must be"):
        grouped_split(_grouped_items(), ratios)


# ------------------------------------------------------------------------------------------------ load_image_2d
IMG = (np.arange(8 * 12).reshape(8, 12) * 2 + 10).astype(np.uint8)  # 8 rows x 12 columns, no symmetry
IMG[2, 9] = 255  # a bright pixel off every axis of symmetry


def _unit(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    return (a - a.min()) / (a.max() - a.min())


def _write(kind: str, path: Path) -> Path:
    if kind in ("png", "jpg"):
        Image.fromarray(IMG).save(path, quality=100)
    elif kind in ("dcm", "dicom-no-suffix"):
        ds_path = write_demo_dicom(path.with_suffix(".dcm"), IMG.astype(np.uint16) * 4, "cxr")
        if kind == "dicom-no-suffix":
            shutil.move(ds_path, path)
    elif kind == "nii":  # NIfTI axes are (x = columns, y = rows): the data array is the image transposed
        nib.save(nib.Nifti1Image(np.ascontiguousarray(IMG.T).astype(np.float32), np.eye(4)), path)
    return path


@pytest.mark.parametrize(
    "kind, name, tol",
    [("png", "a.png", 0), ("jpg", "a.jpg", 0.02), ("dcm", "a.dcm", 0), ("dicom-no-suffix", "IM0001", 0),
     ("nii", "a.nii.gz", 0)],
)  # fmt: skip
def test_load_image_2d_is_rows_first(tmp_path, kind, name, tol):
    path = _write(kind, tmp_path / name)
    x = load_image_2d(path)
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float32 and tuple(x.shape) == (1, 8, 12)
    np.testing.assert_allclose(x[0].numpy(), _unit(IMG), atol=tol + 1e-6)
    assert tuple(np.unravel_index(int(x[0].argmax()), (8, 12))) == (2, 9)


def test_load_image_2d_rescale_false_keeps_reader_values(tmp_path):
    np.testing.assert_array_equal(load_image_2d(_write("png", tmp_path / "a.png"), rescale=False)[0].numpy(), IMG)
    dcm = _write("dcm", tmp_path / "a.dcm")
    np.testing.assert_array_equal(load_image_2d(dcm, rescale=False)[0].numpy(), pydicom.dcmread(dcm).pixel_array)
    np.testing.assert_array_equal(load_image_2d(dcm, rescale=False)[0].numpy(), IMG.astype(np.uint16) * 4)


def test_load_image_2d_rescale_modes(tmp_path):
    png = _write("png", tmp_path / "a.png")
    np.testing.assert_allclose(load_image_2d(png, rescale="dtype")[0].numpy(), IMG / 255.0, atol=1e-7)  # uint8 max
    np.testing.assert_allclose(load_image_2d(png, rescale="min_max")[0].numpy(), _unit(IMG), atol=1e-6)
    nii = _write("nii", tmp_path / "a.nii.gz")  # float data: kept as stored
    np.testing.assert_array_equal(load_image_2d(nii, rescale="dtype")[0].numpy(), IMG)
    with pytest.raises(ValueError, match="`rescale` must be"):
        load_image_2d(png, rescale="max")


@pytest.mark.parametrize("kind", ["png-16bit", "dicom-16bit"])
def test_load_image_2d_dtype_rescale_of_16bit_images(tmp_path, kind):
    """``rescale="dtype"`` divides by the largest *stored* value (65535 for 16-bit PNG, 2**BitsStored - 1 for DICOM),
    although the readers hand back int32 arrays for them."""
    if kind == "png-16bit":
        stored = IMG.astype(np.uint16) * 200  # up to 51000: uses the 16-bit range
        path, top = tmp_path / "a.png", 65535.0
        Image.fromarray(stored).save(path)
        with Image.open(path) as im:
            assert im.mode.startswith("I;16")
    else:
        stored = IMG.astype(np.uint16) * 16  # within the demo writer's BitsStored
        path = write_demo_dicom(tmp_path / "a.dcm", stored, "cxr")
        ds = pydicom.dcmread(path)
        assert ds.BitsAllocated == 16 and stored.max() < 2**ds.BitsStored
        top = 2.0**ds.BitsStored - 1
    np.testing.assert_allclose(load_image_2d(path, rescale="dtype")[0].numpy(), stored / top, atol=1e-6)


def test_load_image_2d_window_on_ct(tmp_path):
    stored = (np.arange(8 * 12).reshape(8, 12) * 25).astype(np.uint16)  # 0 .. 2375 -> HU -1024 .. 1351
    path = write_demo_dicom(tmp_path / "ct.dcm", stored, "ct")  # RescaleIntercept -1024
    x = load_image_2d(path, window="lung")
    expected = np.clip((stored.astype(np.float64) - 1024 + 1350) / 1500, 0, 1)  # lung: L -600 W 1500
    np.testing.assert_allclose(x[0].numpy(), expected, atol=1e-5)
    hu = load_image_2d(path, window="soft_tissue")[0].numpy()
    assert hu.min() == 0.0 and hu.max() == 1.0  # clipped to the window


def test_load_image_2d_rgb_volume_and_writer_round_trip(tmp_path):
    Image.fromarray(np.stack([IMG, IMG // 2, np.zeros_like(IMG)], -1)).save(tmp_path / "rgb.png")
    gray = (IMG.astype(np.float64) + IMG // 2) / 3
    np.testing.assert_allclose(load_image_2d(tmp_path / "rgb.png", rescale=False)[0].numpy(), gray, atol=1e-5)
    vol = np.stack([np.zeros((12, 8)), IMG.T, np.ones((12, 8))], -1).astype(np.float32)  # (x, y, z)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "vol.nii.gz")
    np.testing.assert_array_equal(load_image_2d(tmp_path / "vol.nii.gz", rescale=False)[0].numpy(), IMG)  # middle
    write_nifti(IMG / 255.0, tmp_path / "w.nii.gz")  # the project's writer: the same convention
    np.testing.assert_allclose(load_image_2d(tmp_path / "w.nii.gz", rescale=False)[0].numpy(), IMG / 255.0, atol=1e-6)


# ------------------------------------------------------------------------------------------------ resize, ranges
def test_resize_images_matches_pil_and_hand_values():
    rng = np.random.default_rng(0)
    x = rng.random((2, 1, 16, 16)).astype(np.float32)
    same = torch.as_tensor(x)
    assert resize_images(same, 16) is same  # already at size: unchanged
    out = resize_images(torch.as_tensor(x), 8)  # shrinking: anti-aliased bilinear, as PIL's
    ref = np.stack([np.asarray(Image.fromarray(x[i, 0], mode="F").resize((8, 8), Image.BILINEAR)) for i in range(2)])
    assert tuple(out.shape) == (2, 1, 8, 8)
    np.testing.assert_allclose(out[:, 0].numpy(), ref, atol=1e-5)
    # growing 2 -> 4 (align_corners=False): 1D weights a, (3a + b) / 4, (a + 3b) / 4, b by hand
    up = resize_images(torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]]), 4)
    np.testing.assert_allclose(up[0, 0].numpy(), np.tile([0.0, 0.25, 0.75, 1.0], (4, 1)), atol=1e-6)


def test_resize_images_clips_to_value_range():
    x = torch.zeros(1, 1, 9, 9)
    x[..., ::2, ::2] = 1.0  # high-frequency pattern
    for value_range in ((0.0, 1.0), (0.2, 0.6)):
        out = resize_images(x, 4, value_range=value_range)
        assert out.min() >= value_range[0] and out.max() <= value_range[1]
    wide = resize_images(x * 2 - 1, 5, value_range=(-1.0, 1.0))  # the model range
    assert wide.min() >= -1 and wide.max() <= 1
    np.testing.assert_allclose(wide.numpy(), resize_images(x, 5).numpy() * 2 - 1, atol=1e-6)  # linear


def test_unit_range_round_trip():
    x = np.linspace(0, 1, 11, dtype=np.float32).reshape(1, 11)
    model = from_unit_range(x)
    np.testing.assert_allclose(model, 2 * x - 1, atol=1e-7)  # the one [0, 1] -> [-1, 1] mapping
    back = to_unit_range(model)
    assert isinstance(back, np.ndarray) and back.dtype == np.float32
    np.testing.assert_allclose(back, x, atol=1e-7)
    t = torch.as_tensor(x)
    assert isinstance(from_unit_range(t), torch.Tensor)  # keeps the array type
    np.testing.assert_allclose(to_unit_range(from_unit_range(t)), x, atol=1e-7)
    np.testing.assert_allclose(to_unit_range(np.array([-3.0, 3.0])), [0.0, 1.0])  # clipped
    np.testing.assert_allclose(from_unit_range(x, (0.0, 255.0)), x * 255, atol=1e-4)
    np.testing.assert_allclose(to_unit_range(from_unit_range(x, (0.0, 255.0)), (0.0, 255.0)), x, atol=1e-6)
