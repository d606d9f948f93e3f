"""Datalist builders: MedMNIST npz, PNG class folders, DICOM folders + CSV, stratified splits, Decathlon JSON."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers import PNEUMONIAMNIST_NPZ, write_medmnist_npz
from monai.data import load_decathlon_datalist
from PIL import Image

from monai_synth.data import (
    datalists,
    dicom_folder_datalist,
    download_medmnist,
    image_folder_datalist,
    load_datalist_json,
    load_medmnist_npz,
    medmnist_datalist,
    split_datalist,
    write_datalist_json,
)


def _npz(tmp_path: Path, channels: int = 0, **override) -> Path:
    path = tmp_path / "toy.npz"
    write_medmnist_npz(path, n=6, shape=(4, 5), channels=channels, labels=[0, 1, 2, 1, 0, 2], **override)
    return path


def test_medmnist_npz_shapes_and_values(tmp_path):
    path = _npz(tmp_path)
    images, labels = load_medmnist_npz(path, "val")
    assert images.shape == (6, 4, 5) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and labels.tolist() == [0, 1, 2, 1, 0, 2]
    items = medmnist_datalist(path, "val")
    assert items[3]["label"] == 1 and items[3]["image"].shape == (1, 4, 5) and items[3]["image"].dtype == np.float32
    assert items[3]["image"][0, 2, 1] == pytest.approx(images[3, 2, 1] / 255.0)


def test_medmnist_rgb_channel_first(tmp_path):
    path = _npz(tmp_path, channels=3)
    images, _ = load_medmnist_npz(path, "train")
    item = medmnist_datalist(path, "train")[2]
    assert item["image"].shape == (3, 4, 5)
    assert item["image"][2, 1, 3] == pytest.approx(images[2, 1, 3, 2] / 255.0)


def test_medmnist_real_pneumonia(shared_data):
    images, labels = load_medmnist_npz(shared_data / PNEUMONIAMNIST_NPZ, "train")
    assert images.shape == (4708, 28, 28) and set(np.unique(labels)) == {0, 1}
    assert (labels == 0).sum() == 1214 and (labels == 1).sum() == 3494  # PROVENANCE.md
    items = medmnist_datalist(shared_data / PNEUMONIAMNIST_NPZ, "train")
    assert len(items) == 4708 and [it["label"] for it in items[:50]] == labels[:50].tolist()
    assert items[0]["image"].shape == (1, 28, 28) and items[0]["image"].dtype == np.float32
    np.testing.assert_allclose(items[7]["image"][0], images[7] / 255.0, atol=1e-7)


@pytest.mark.parametrize(
    "override,split,error,pattern",
    [
        ({}, "training", ValueError, r"`split` must be one of \['train', 'val', 'test'\]"),
        ({"test_labels": None}, "test", ValueError, r"lacks keys \['test_labels'\]"),
        ({"val_labels": np.zeros((6, 3), np.uint8)}, "val", ValueError, r"shape \(6, 3\)"),
        ({"val_labels": np.zeros((5, 1), np.uint8)}, "val", ValueError, "6 images but 5 labels"),
        ({"val_images": np.array([{"a": 1}] * 6, dtype=object)}, "val", ValueError, r"toy\.npz.*allow_pickle"),
    ],
    ids=["unknown_split", "missing_key", "multilabel", "length", "pickled_object"],
)
def test_medmnist_errors(tmp_path, override, split, error, pattern):
    with pytest.raises(error, match=pattern):
        load_medmnist_npz(_npz(tmp_path, **override), split)


def test_download_medmnist_uses_local_file(tmp_path, monkeypatch):
    def no_import(name):
        raise AssertionError(f"{name} must not be imported when the file exists")

    monkeypatch.setattr(datalists, "optional_import", no_import)
    for size, name in [(28, "pneumoniamnist.npz"), (64, "pneumoniamnist_64.npz")]:
        (tmp_path / name).write_bytes(b"placeholder")
        assert download_medmnist("pneumoniamnist", tmp_path, size=size) == tmp_path / name


def test_download_medmnist_missing_package(tmp_path, monkeypatch):
    monkeypatch.setattr(datalists, "optional_import", lambda name: (None, False))
    with pytest.raises(ImportError, match=r"pneumoniamnist\.npz.*pip install medmnist"):
        download_medmnist("pneumoniamnist", tmp_path)


def _png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(path)


def test_image_folder_flat(tmp_path):
    for rel in ("normal/b.png", "normal/a.png", "pneumonia/c.PNG", "pneumonia/notes.txt", "aaa_empty/.keep"):
        _png(tmp_path / rel) if rel.lower().endswith(".png") else (tmp_path / rel).parent.mkdir(exist_ok=True)
    items, mapping = image_folder_datalist(tmp_path)
    assert mapping == {"aaa_empty": 0, "normal": 1, "pneumonia": 2}
    assert [(Path(i["image"]).name, i["label"]) for i in items] == [("a.png", 1), ("b.png", 1), ("c.PNG", 2)]


@pytest.mark.parametrize("split,expected", [("train", 2), ("val", 1), ("valid", 1), ("test", 1)])
def test_image_folder_splits_share_mapping(tmp_path, split, expected):
    for rel in ("train/cat/1.png", "train/dog/2.png", "valid/dog/3.png", "test/bird/4.png"):
        _png(tmp_path / rel)
    items, mapping = image_folder_datalist(tmp_path, split)
    assert mapping == {"bird": 0, "cat": 1, "dog": 2}  # union over splits, sorted
    assert len(items) == expected


@pytest.mark.parametrize(
    "split,error,pattern", [("dev", ValueError, "`split` must be one of"), ("test", FileNotFoundError, "test")]
)
def test_image_folder_errors(tmp_path, split, error, pattern):
    _png(tmp_path / "train" / "x" / "1.png")
    with pytest.raises(error, match=pattern):
        image_folder_datalist(tmp_path, split)


def _dicom_root(tmp_path: Path, csv_text: str) -> tuple[Path, Path]:
    root = tmp_path / "studies"
    (root / "p1").mkdir(parents=True)
    (root / "p2").mkdir()
    (root / "p3.dcm").write_bytes(b"")
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text(csv_text)
    return root, csv_path


@pytest.mark.parametrize(
    "csv_text,mapping,labels",
    [
        ("id,label\np1,1\np2,0\np3,1\n", {"0": 0, "1": 1}, [1, 0, 1]),
        ("id,label\np3,malignant\np1,benign\np2,malignant\n", {"benign": 0, "malignant": 1}, [0, 1, 1]),
    ],
    ids=["int_labels", "named_labels"],
)
def test_dicom_folder_datalist(tmp_path, csv_text, mapping, labels):
    root, csv_path = _dicom_root(tmp_path, csv_text)
    items, class_to_index = dicom_folder_datalist(root, csv_path)
    assert class_to_index == mapping
    assert [(i["id"], i["label"]) for i in items] == list(zip(["p1", "p2", "p3"], labels))
    assert items[2]["image"] == str(root / "p3.dcm")


@pytest.mark.parametrize(
    "csv_text,kwargs,pattern",
    [
        ("id,label\np1,1\np2,0\np3,1\np9,0\n", {}, r"no subfolder or \.dcm file.*\['p9'\]"),
        ("id,label\np1,1\n", {}, r"have no label.*\['p2', 'p3'\]"),
        ("id,label\np1,1\np1,0\np2,0\np3,0\n", {}, "lists id 'p1' twice"),
        ("case,y\np1,1\n", {}, r"lacks columns \['id', 'label'\]"),
        ("case,y\np1,1\np2,1\np3,0\n", {"id_column": "case", "label_column": "y"}, None),
    ],
    ids=["unknown_id", "missing_label", "duplicate", "columns", "custom_columns_ok"],
)
def test_dicom_folder_errors(tmp_path, csv_text, kwargs, pattern):
    root, csv_path = _dicom_root(tmp_path, csv_text)
    if pattern is None:
        assert [i["label"] for i in dicom_folder_datalist(root, csv_path, **kwargs).items] == [1, 1, 0]
        return
    with pytest.raises(ValueError, match=pattern):
        dicom_folder_datalist(root, csv_path, **kwargs)


def _items(n0: int, n1: int) -> list[dict]:
    return [{"image": f"/x/{i}.dcm", "label": int(i >= n0)} for i in range(n0 + n1)]


def test_split_stratified_and_seeded():
    items = _items(60, 40)
    splits = split_datalist(items, ratios=(0.8, 0.1, 0.1), seed=3)
    counts = {k: Counter(i["label"] for i in v) for k, v in splits.items()}
    assert counts == {"training": {0: 48, 1: 32}, "validation": {0: 6, 1: 4}, "test": {0: 6, 1: 4}}
    ids = [i["image"] for v in splits.values() for i in v]
    assert sorted(ids) == sorted(i["image"] for i in items)  # a partition: disjoint and complete
    assert split_datalist(items, seed=3) == splits
    assert split_datalist(items, seed=4)["test"] != splits["test"]
    unstratified = split_datalist(items, ratios=(1, 1, 0), stratify=False)
    assert [len(v) for v in unstratified.values()] == [50, 50, 0]


@pytest.mark.parametrize("ratios", [(0.8, 0.2), (1, -1, 1), (0, 0, 0)])
def test_split_bad_ratios(ratios):
    with pytest.raises(ValueError, match="`ratios` must be 3"):
        split_datalist(_items(2, 2), ratios=ratios)


def test_json_roundtrip_with_monai(tmp_path):
    (tmp_path / "imgs").mkdir()
    items = [{"image": str(tmp_path / "imgs" / f"{i}.dcm"), "label": np.int64(i % 2)} for i in range(4)]
    splits = {"training": items[:2], "validation": items[2:3], "test": items[3:]}
    path = write_datalist_json(splits, tmp_path / "datalist.json", name="toy")
    raw = json.loads(path.read_text())
    assert raw["name"] == "toy" and raw["training"][1] == {"image": "imgs/1.dcm", "label": 1}  # relative, plain int
    for key in ("training", "validation", "test"):
        assert load_decathlon_datalist(str(path), data_list_key=key) == load_datalist_json(path, key)
        assert [i["image"] for i in load_datalist_json(path, key)] == [i["image"] for i in splits[key]]


def test_json_paths_from_a_relative_output_folder(tmp_path, monkeypatch):
    """Bundles run from their folder with relative output paths (``output/samples``): a relative ``Path`` is taken
    from the working directory, so the loader (which reads relative entries from the JSON's folder) finds the file;
    a relative string is kept as given; an absolute path outside the folder stays absolute."""
    monkeypatch.chdir(tmp_path)
    out = Path("output") / "samples"
    out.mkdir(parents=True)
    (out / "s0.png").write_bytes(b"x")
    outside = tmp_path / "elsewhere.png"
    items = [{"image": out / "s0.png", "ref": "ref-0a1b"}, {"image": str(outside)}, {"image": "s0.png"}]
    path = write_datalist_json({"training": items}, out / "datalist.json")
    raw = json.loads(path.read_text())["training"]
    assert [r["image"] for r in raw] == ["s0.png", str(outside), "s0.png"] and raw[0]["ref"] == "ref-0a1b"
    loaded = load_datalist_json(path)
    assert Path(loaded[0]["image"]).resolve() == (out / "s0.png").resolve() and Path(loaded[0]["image"]).is_file()


def test_label_csv_with_a_byte_order_mark_and_spaced_header(tmp_path):
    """Spreadsheet exports ('CSV UTF-8') start with a BOM; the header used to read as '\\ufeffid'."""
    from monai_synth.data import dicom_folder_datalist
    from monai_synth.data.datalists import read_label_csv

    for sid in ("a", "b"):
        (tmp_path / "root" / sid).mkdir(parents=True)
    p = tmp_path / "labels.csv"
    p.write_bytes("\ufeffid , label\na,normal\nb,pneumonia\n".encode())
    columns, rows = read_label_csv(p)
    assert columns == ["id", "label"] and rows[0]["id"] == "a"
    dl = dicom_folder_datalist(tmp_path / "root", p)
    assert [it["label"] for it in dl.items] == [0, 1]
