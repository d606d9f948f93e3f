"""The one labelled-split loader: any supported source -> in-memory train / val / test items at one size.

Every entry point (the augmentation pipeline, the ``cxr_cfg_ddpm`` bundle's training and evaluation, the guided
bundles' evaluation, ``benchmarks/utility.py``) reads its labelled data through :func:`load_labelled_splits`. Items are
``{"image": float32 (1, S, S) in [0, 1], "label": int}``, rows first (:mod:`monai_synth.data.image_io`).

Patients: whenever a patient id is known (a ``patient`` column in the label CSV, the ``patient`` key of a datalist
item, or the DICOM PatientID), the splits that this module draws keep every patient's images in one split
(:func:`grouped_split`). Splits that the data already defines (MedMNIST, a datalist's lists, ``train``/``test``
folders) are used as given and a warning names patients found in two of them. When no patient id is known, images are
split one by one (each image is taken to be its own patient) and a warning says so; see docs/data.md.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai_synth.data.image_io import is_dicom_path, load_image_2d, resize_images
from monai_synth.utils.enums import DataSource

__all__ = ["SPLITS", "grouped_split", "items_from_arrays", "load_labelled_splits", "patient_of"]

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
FOLDER_SUFFIXES = (".png", ".jpg", ".jpeg")


def items_from_arrays(images: np.ndarray | torch.Tensor, labels: Sequence[int]) -> list[dict[str, Any]]:
    """``(N, C, H, W)`` images and N labels -> items ``{"image": float32 ndarray (C, H, W), "label": int}``."""
    images = torch.as_tensor(images, dtype=torch.float32)
    return [{"image": images[i].numpy(), "label": int(labels[i])} for i in range(len(labels))]


def patient_of(path: str | os.PathLike) -> str | None:
    """The DICOM PatientID of a file or of the first file of a series folder; ``None`` when absent or not DICOM."""
    import pydicom

    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
        if not files:
            return None
        p = files[0]
    if not is_dicom_path(p):
        return None
    try:
        pid = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["PatientID"]).get("PatientID")
    except Exception:  # unreadable header: no patient known for this item
        return None
    return str(pid).strip() or None if pid is not None else None


def grouped_split(
    items: Sequence[Mapping[str, Any]],
    ratios: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    group_key: str = "patient",
    label_key: str = "label",
) -> list[list[dict[str, Any]]]:
    """Split ``items`` by ``ratios`` so that no group (patient) is in two parts, keeping class proportions.

    Groups are ordered by their majority label, shuffled with ``seed`` within a label, and each is given to the part
    furthest below its target number of images of that label. An item without ``group_key`` is its own group.

    Returns:
        one list per ratio.
    """
    ratios = np.asarray(ratios, dtype=np.float64)
    if ratios.ndim != 1 or len(ratios) < 1 or (ratios < 0).any() or ratios.sum() <= 0:
        raise ValueError(f"`ratios` must be non-negative numbers with a positive sum, got {tuple(ratios)}.")
    ratios = ratios / ratios.sum()
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for i, it in enumerate(items):
        gid = it.get(group_key)
        groups[f"item:{i}" if gid in (None, "") else f"group:{gid}"].append(dict(it))
    by_label: dict[int, list[str]] = defaultdict(list)
    for gid, members in groups.items():
        labels = [int(m[label_key]) for m in members]
        by_label[max(set(labels), key=labels.count)].append(gid)
    rng = np.random.default_rng(seed)
    parts: list[list[dict[str, Any]]] = [[] for _ in ratios]
    for label in sorted(by_label):
        gids = sorted(by_label[label])
        rng.shuffle(gids)
        total = sum(len(groups[g]) for g in gids)
        filled = np.zeros(len(ratios))
        for g in gids:
            k = int(np.argmax(ratios * total - filled))
            parts[k].extend(groups[g])
            filled[k] += len(groups[g])
    return parts


def _warn_shared_patients(lists: Mapping[str, Sequence[Mapping[str, Any]]], where: str) -> None:
    seen: dict[str, set[str]] = defaultdict(set)
    for split, items in lists.items():
        for it in items:
            if it.get("patient") not in (None, ""):
                seen[str(it["patient"])].add(split)
    shared = sorted(p for p, s in seen.items() if len(s) > 1)
    if shared:
        logger.warning(
            "%s: %d patients have images in more than one split (e.g. %s); metrics on such splits are optimistic.",
            where, len(shared), shared[:3],
        )  # fmt: skip


def _csv_patients(labels_csv: Path, key_column: str) -> dict[str, str]:
    """``{key: patient}`` from a UTF-8 label CSV that has a ``patient`` column (empty when it has none)."""
    from monai_synth.data.datalists import read_label_csv

    columns, rows = read_label_csv(labels_csv)
    if "patient" not in columns or key_column not in columns:
        return {}
    return {str(r[key_column]).strip(): str(r["patient"] or "").strip() for r in rows}


def _split_three(items: list[dict], seed: int, where: str) -> dict[str, list[dict]]:
    if not any(it.get("patient") for it in items):
        logger.warning("%s: no patient id is known; images are split one by one (see docs/data.md).", where)
    train, val, test = grouped_split(items, (0.7, 0.15, 0.15), seed=seed)
    return {"train": train, "val": val, "test": test}


def _folder_lists(path: Path, seed: int, val_fraction: float) -> dict[str, list[dict]]:
    from monai_synth.data.datalists import image_folder_datalist

    found = {s: n for s, names in (("train", ("train",)), ("val", ("valid", "val")), ("test", ("test",)))
             for n in names if (path / n).is_dir()}  # fmt: skip
    for split in ("train", "test"):
        if split not in found:
            raise ValueError(f"Folder {str(path)!r} has no {split!r} split folder; see docs/data.md.")
    patients = _csv_patients(path / "labels.csv", "path") if (path / "labels.csv").is_file() else {}
    lists = {}
    for split, name in found.items():
        items = list(image_folder_datalist(path, split=name, extensions=FOLDER_SUFFIXES).items)
        for it in items:
            rel = Path(it["image"]).relative_to(path).as_posix()
            if rel in patients:
                it["patient"] = patients[rel]
        lists[split] = items
    if "val" not in lists:  # carve a validation split from train, grouped by patient
        if not any(it.get("patient") for it in lists["train"]):
            logger.warning("%s: no patient id is known; validation images are carved one by one.", path)
        train, val = grouped_split(lists["train"], (1.0 - val_fraction, val_fraction), seed=seed)
        lists["train"], lists["val"] = train, val
    return lists


def load_labelled_splits(
    source: str | DataSource = DataSource.DEMO,
    path: str | os.PathLike | None = None,
    image_size: int = 28,
    work_dir: str | os.PathLike = "./outputs",
    demo_kind: str = "cxr",
    demo_n_per_class: int = 150,
    demo_size: int | None = None,
    window: str | None = None,
    seed: int = 0,
    labels_csv: str | os.PathLike | None = None,
    val_fraction: float = 0.15,
    demo_split: Sequence[float] = (0.7, 0.15, 0.15),
) -> dict[str, list[dict[str, Any]]]:
    """Read a labelled 2D data set into memory as train / val / test items at ``image_size``.

    Args:
        source: a :class:`~monai_synth.utils.enums.DataSource`: ``"demo"`` (built-in DICOM demo studies written to
            ``work_dir/demo_data``, one patient per study, 70/15/15), ``"medmnist"`` (a MedMNIST ``.npz``),
            ``"folder"`` (``path/{train,valid|val,test}/<class>/*.{png,jpg,jpeg}``; without ``valid``, ``val_fraction``
            of train is carved off, grouped by the ``patient`` column of ``path/labels.csv`` when there is one),
            ``"datalist"`` (a MONAI datalist JSON with ``training``/``validation``/``test``) or ``"dicom"`` (a folder
            of DICOM studies + ``labels_csv``, split 70/15/15 by patient, stratified by label).
        path: the data file or folder (not used by ``"demo"``).
        image_size: output resolution (square).
        work_dir: where demo data is written.
        demo_kind: demo modality (``"cxr"``, ``"ct"``, ``"mg"``; see :func:`~monai_synth.data.make_demo_dataset`).
        demo_n_per_class: demo studies per class.
        demo_size: demo image size before resizing; ``None``: 64 px, or ``image_size`` when that is larger (so
            demo data at 128-512 px is drawn at that size, not upsampled).
        window: HU window preset for DICOM files (``"lung"`` by default for CT demo data); ``None``: per-image
            min-max scaling.
        seed: demo data seed and the split seed.
        labels_csv: label CSV of ``"dicom"`` (columns ``id``, ``label`` and optionally ``patient``).
        val_fraction: validation share carved from train when a folder has no validation split.
        demo_split: train / val / test proportions of the demo studies.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}`` of ``{"image": float32 (1, S, S) in [0, 1], "label": int}``.

    Raises:
        ValueError: unknown ``source``, a missing ``path`` or ``labels_csv`` (naming the option).
    """
    options = [m.value for m in DataSource]
    if str(source) not in options:
        raise ValueError(f"`data_source` must be one of {options}, got {source!r}.")
    source = DataSource(str(source))
    if source != DataSource.DEMO and path is None:
        raise ValueError(f"`data_path` is required for data_source={source.value!r} (a file or folder with the data).")
    image_size = int(image_size)
    if source == DataSource.MEDMNIST:
        from monai_synth.data.datalists import medmnist_datalist

        out = {}
        raw = {split: medmnist_datalist(path, split) for split in SPLITS}
        _check_label_set(raw, str(path))
        for split in SPLITS:
            items = raw[split]
            x = torch.stack([torch.as_tensor(it["image"]) for it in items]).mean(1, keepdim=True)
            out[split] = items_from_arrays(resize_images(x, image_size), [it["label"] for it in items])
        return out
    if source == DataSource.DEMO:
        from monai_synth.data.demo import make_demo_dataset

        datalist = make_demo_dataset(
            Path(work_dir) / "demo_data", kind=demo_kind, n_per_class=demo_n_per_class, seed=seed,
            size=int(demo_size) if demo_size is not None else max(64, int(image_size)),
            ratios=tuple(float(r) for r in demo_split),
        )
        if window is None and demo_kind == "ct":
            window = "lung"
        lists = {"train": datalist["training"], "val": datalist["validation"], "test": datalist["test"]}
    elif source == DataSource.FOLDER:
        lists = _folder_lists(Path(path), seed, val_fraction)
        _warn_shared_patients(lists, str(path))
    elif source == DataSource.DICOM:
        from monai_synth.data.datalists import dicom_folder_datalist

        if labels_csv is None:
            raise ValueError("data_source='dicom' needs `labels_csv` (a CSV with columns id,label naming each study).")
        items = list(dicom_folder_datalist(path, labels_csv).items)
        patients = _csv_patients(Path(labels_csv), "id")
        for it in items:
            it["patient"] = patients.get(it["id"]) or patient_of(it["image"])
        lists = _split_three(items, seed, str(path))
    else:
        from monai_synth.data.datalists import load_datalist_json

        lists = {
            split: load_datalist_json(path, key)
            for split, key in (("train", "training"), ("val", "validation"), ("test", "test"))
        }
        _warn_shared_patients(lists, str(path))
    _check_label_set(lists, str(path) if path is not None else "the demo data")
    return {split: _load_items(items, image_size, window) for split, items in lists.items()}


def _check_label_set(lists: Mapping[str, Sequence[Mapping[str, Any]]], where: str) -> None:
    """Labels must be the integers 0..K-1, each with training images, and val/test may use only those classes.

    A gap (labels {0, 2}) would make an empty class 1 that the generator still samples and the classifier still
    predicts; renumbering silently would misname the classes, so the user is asked to do it.
    """
    train = sorted({int(it["label"]) for it in lists.get("train", [])})
    if not train:
        return
    expected = list(range(train[-1] + 1))
    if train != expected or train[0] != 0:
        missing = sorted(set(expected) - set(train))
        raise ValueError(
            f"{where}: the training labels are {train}, not 0..{train[-1]}: class(es) {missing} have no training "
            "images. Renumber the labels to 0..K-1 (one per class present), or add images of those classes."
        )
    for split in ("val", "test"):
        extra = sorted({int(it["label"]) for it in lists.get(split, [])} - set(train))
        if extra:
            raise ValueError(f"{where}: the {split} split has labels {extra} that no training image has.")


def _load_items(items: Sequence[Mapping[str, Any]], image_size: int, window: str | None) -> list[dict[str, Any]]:
    if not items:
        return []
    images = torch.stack([load_image_2d(it["image"], window=window) for it in items])
    return items_from_arrays(resize_images(images, image_size), [int(it["label"]) for it in items])
