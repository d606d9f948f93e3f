"""Datalist builders: MedMNIST ``.npz``, PNG class folders, DICOM folders + label CSV, stratified splits, JSON.

Datalists are MONAI's: a list of dicts (``{"image": ..., "label": int}``) and, on disk, the Decathlon JSON layout
``{"training": [...], "validation": [...], "test": [...]}`` readable by :func:`monai.data.load_decathlon_datalist`.
Splits use :func:`monai.data.partition_dataset_classes` (stratified) or :func:`monai.data.partition_dataset`.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from monai.config import PathLike
from monai.data import load_decathlon_datalist, partition_dataset, partition_dataset_classes
from monai.utils import optional_import

from monai_synth.utils.io import atomic_path

__all__ = [
    "read_label_csv",
    "SPLIT_KEYS",
    "MEDMNIST_SPLITS",
    "LabelledDatalist",
    "load_medmnist_npz",
    "medmnist_datalist",
    "download_medmnist",
    "image_folder_datalist",
    "dicom_folder_datalist",
    "split_datalist",
    "write_datalist_json",
    "load_datalist_json",
]

logger = logging.getLogger(__name__)

SPLIT_KEYS = ("training", "validation", "test")
MEDMNIST_SPLITS = ("train", "val", "test")
# folder names accepted for each split in image_folder_datalist
_FOLDER_SPLITS = {"train": ("train", "training"), "val": ("val", "valid", "validation"), "test": ("test",)}


class LabelledDatalist(NamedTuple):
    """A datalist and the class-name -> index mapping used for its ``"label"`` values."""

    items: list[dict]
    class_to_index: dict[str, int]


def load_medmnist_npz(path: PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Load one split of a MedMNIST ``.npz`` file (keys ``<split>_images`` / ``<split>_labels``).

    Args:
        path: the ``.npz`` file (e.g. ``pneumoniamnist.npz``), read with ``allow_pickle=False``.
        split: one of ``"train"``, ``"val"``, ``"test"``.

    Returns:
        images ``uint8`` of shape (N, H, W) or (N, H, W, C), labels ``int64`` of shape (N,).

    Raises:
        ValueError: unknown split, missing keys, multi-label arrays or mismatched lengths.
        FileNotFoundError: ``path`` does not exist.
    """
    if split not in MEDMNIST_SPLITS:
        raise ValueError(f"`split` must be one of {list(MEDMNIST_SPLITS)}, got {split!r}.")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MedMNIST file {str(path)!r} does not exist; see `download_medmnist`.")
    with np.load(path, allow_pickle=False) as npz:
        keys = (f"{split}_images", f"{split}_labels")
        missing = [k for k in keys if k not in npz.files]
        if missing:
            raise ValueError(f"MedMNIST file {str(path)!r} lacks keys {missing}; it has {sorted(npz.files)}.")
        try:
            images, labels = np.asarray(npz[keys[0]]), np.asarray(npz[keys[1]])
        except ValueError as e:  # object arrays need pickle, which is refused for user files
            raise ValueError(f"MedMNIST file {str(path)!r}: cannot load `{split}` arrays ({e}).") from e
    if images.ndim not in (3, 4):
        raise ValueError(f"{str(path)!r}: `{keys[0]}` must be (N,H,W) or (N,H,W,C), got shape {images.shape}.")
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise ValueError(
            f"{str(path)!r}: `{keys[1]}` has shape {labels.shape}; only single-label datasets (N,) or (N, 1) are "
            "supported."
        )
    if len(labels) != len(images):
        raise ValueError(f"{str(path)!r}: {len(images)} images but {len(labels)} labels in split {split!r}.")
    return images.astype(np.uint8, copy=False), labels.astype(np.int64)


def medmnist_datalist(path: PathLike, split: str) -> list[dict]:
    """In-memory datalist of a MedMNIST split: ``{"image": float32 (C,H,W) in [0, 1], "label": int}``.

    Args:
        path: the MedMNIST ``.npz`` file.
        split: ``"train"``, ``"val"`` or ``"test"``.

    Returns:
        one dict per image, usable with :class:`monai.data.Dataset`.
    """
    images, labels = load_medmnist_npz(path, split)
    chw = images[:, None] if images.ndim == 3 else np.moveaxis(images, -1, 1)
    scaled = chw.astype(np.float32) / np.float32(255.0)
    return [{"image": scaled[i], "label": int(labels[i])} for i in range(len(labels))]


def download_medmnist(name: str, root: PathLike, size: int = 28) -> Path:
    """Path of ``<root>/<name>[_<size>].npz``, downloading it with the optional ``medmnist`` package if absent.

    ``medmnist`` is imported only when the file is missing (it is not a dependency of monai_synth).

    Args:
        name: MedMNIST flag, e.g. ``"pneumoniamnist"``.
        root: folder for the file.
        size: image size (28, 64, 128 or 224).

    Returns:
        the local ``.npz`` path.

    Raises:
        ImportError: the file is missing and ``medmnist`` is not installed (message says what to install).
        ValueError: ``name`` is not a MedMNIST dataset.
    """
    root = Path(root)
    path = root / (f"{name}.npz" if size == 28 else f"{name}_{size}.npz")
    if path.is_file():
        return path
    medmnist, has_medmnist = optional_import("medmnist")
    if not has_medmnist:
        raise ImportError(
            f"{str(path)!r} does not exist and the optional package `medmnist` is not installed: run "
            f"`pip install medmnist` (it may pull another torch build), or place {path.name!r} in {str(root)!r}."
        )
    info = medmnist.INFO
    if name not in info:
        raise ValueError(f"`name` must be one of {sorted(info)}, got {name!r}.")
    root.mkdir(parents=True, exist_ok=True)
    getattr(medmnist, info[name]["python_class"])(split="train", root=str(root), download=True, size=size)
    return path


def _find_split_dir(root: Path, split: str) -> Path:
    if split not in _FOLDER_SPLITS:
        raise ValueError(f"`split` must be one of {sorted(_FOLDER_SPLITS) + ['valid', None]}, got {split!r}.")
    for name in _FOLDER_SPLITS[split]:
        if (root / name).is_dir():
            return root / name
    raise FileNotFoundError(f"image folder {str(root)!r} has no split folder named any of {_FOLDER_SPLITS[split]}.")


def image_folder_datalist(
    root: PathLike, split: str | None = None, extensions: Sequence[str] = (".png",)
) -> LabelledDatalist:
    """Datalist of ``root/<class>/*.png`` (``split=None``) or ``root/<split>/<class>/*.png``.

    Class indices come from the sorted class-folder names; with splits, from the union over all split folders, so
    ``train`` and ``test`` share one mapping even when a split lacks a class.

    Args:
        root: the dataset folder.
        split: ``None``, ``"train"``, ``"val"`` (folder ``val``, ``valid`` or ``validation``) or ``"test"``.
        extensions: accepted file suffixes (case-insensitive).

    Returns:
        items ``{"image": path str, "label": int}`` sorted by class then file name, and ``class_to_index``.

    Raises:
        ValueError: unknown split, or no image found.
        FileNotFoundError: ``root`` or the split folder does not exist.
    """
    if split == "valid":
        split = "val"
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist.")
    exts = tuple(e.lower() for e in extensions)
    if split is None:
        base = root
        class_names = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    else:
        base = _find_split_dir(root, split)
        split_dirs = [root / n for names in _FOLDER_SPLITS.values() for n in names if (root / n).is_dir()]
        class_names = sorted(
            {d.name for s in split_dirs for d in s.iterdir() if d.is_dir() and not d.name.startswith(".")}
        )
    class_to_index = {name: i for i, name in enumerate(class_names)}
    items = []
    for name in class_names:
        folder = base / name
        if not folder.is_dir():
            continue
        for f in sorted(folder.iterdir()):
            if f.is_file() and f.suffix.lower() in exts:
                items.append({"image": str(f), "label": class_to_index[name]})
    if not items:
        raise ValueError(f"no {list(exts)} images under {str(base)!r} in class folders {class_names}.")
    return LabelledDatalist(items, class_to_index)


def read_label_csv(path: PathLike) -> tuple[list[str], list[dict[str, str]]]:
    """The one label-CSV reader: ``(columns, rows)`` of a UTF-8 CSV, a byte-order mark tolerated.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not UTF-8 (naming the file and the line, and what to do), or has no header.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label CSV {str(path)!r} does not exist.")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ValueError(
            f"label CSV {str(path)!r} is not UTF-8 (byte {e.start}, line {line}): save it as UTF-8 (for example "
            "'CSV UTF-8' in a spreadsheet program)."
        ) from e
    reader = csv.DictReader(text.splitlines())
    columns = [c.strip() for c in (reader.fieldnames or [])]
    if not columns:
        raise ValueError(f"label CSV {str(path)!r} is empty: it needs a header line (e.g. id,label).")
    reader.fieldnames = columns
    return columns, [dict(r) for r in reader]


def dicom_folder_datalist(
    root: PathLike, labels_csv: PathLike, id_column: str = "id", label_column: str = "label"
) -> LabelledDatalist:
    """Datalist of one DICOM study/series per subfolder (or per ``*.dcm`` file) of ``root``, labelled from a CSV.

    Sample ids are subfolder names and ``.dcm`` file stems. Integer labels are kept; other labels (``"benign"``)
    are mapped to indices in sorted order.

    Args:
        root: folder holding the series subfolders and/or ``.dcm`` files.
        labels_csv: CSV with at least ``id_column`` and ``label_column``.
        id_column: column with the sample id.
        label_column: column with the label.

    Returns:
        items ``{"image": path str, "label": int, "id": str}`` sorted by id, and ``class_to_index``.

    Raises:
        ValueError: missing columns, duplicate ids, ids in the CSV that have no sample, samples without a label
            (each message names them).
        FileNotFoundError: ``root`` or ``labels_csv`` does not exist.
    """
    root, labels_csv = Path(root), Path(labels_csv)
    if not root.is_dir():
        raise FileNotFoundError(f"DICOM root folder {str(root)!r} does not exist.")
    columns, rows = read_label_csv(labels_csv)
    samples: dict[str, Path] = {}
    for p in sorted(root.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir():
            samples[p.name] = p
        elif p.is_file() and p.suffix.lower() == ".dcm":
            samples[p.stem] = p
    missing_cols = [c for c in (id_column, label_column) if c not in columns]
    if missing_cols:
        raise ValueError(f"label CSV {str(labels_csv)!r} lacks columns {missing_cols}; it has {columns}.")
    labels: dict[str, str] = {}
    for line, row in enumerate(rows, start=2):
        if row.get(id_column) is None or row.get(label_column) is None:
            raise ValueError(f"label CSV {str(labels_csv)!r} line {line} has fewer fields than the header.")
        sid, lab = str(row[id_column]).strip(), str(row[label_column]).strip()
        if sid in labels:
            raise ValueError(f"label CSV {str(labels_csv)!r} lists id {sid!r} twice (line {line}).")
        labels[sid] = lab
    unknown = sorted(set(labels) - set(samples))
    if unknown:
        raise ValueError(
            f"label CSV {str(labels_csv)!r} has ids with no subfolder or .dcm file in {str(root)!r}: {unknown[:10]}"
            f"{' ...' if len(unknown) > 10 else ''}."
        )
    unlabelled = sorted(set(samples) - set(labels))
    if unlabelled:
        raise ValueError(
            f"samples in {str(root)!r} have no label in {str(labels_csv)!r}: {unlabelled[:10]}"
            f"{' ...' if len(unlabelled) > 10 else ''}."
        )
    values = sorted(set(labels.values()))
    try:
        class_to_index = {v: int(v) for v in values}
    except ValueError:
        class_to_index = {v: i for i, v in enumerate(values)}
    items = [{"image": str(samples[s]), "label": class_to_index[labels[s]], "id": s} for s in sorted(samples)]
    from monai_synth.data.deid import exclude_burned_in

    burned = set(_burned_in_samples(items, exclude_burned_in))
    items = [it for it in items if it["id"] not in burned]
    if not items:
        raise ValueError(f"every sample of {str(root)!r} is marked BurnedInAnnotation=YES: none can be used.")
    return LabelledDatalist(items, class_to_index)


def _burned_in_samples(items: Sequence[dict], exclude: Any) -> list[str]:
    """Ids of samples (a file or a series folder) with a file marked ``BurnedInAnnotation YES`` (excluded, warned)."""
    out = []
    for it in items:
        p = Path(it["image"])
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        _, excluded = exclude(files, f"files of sample {it['id']!r}")
        if excluded:
            out.append(it["id"])
    return out


def split_datalist(
    items: Sequence[dict],
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    stratify: bool = True,
    label_key: str = "label",
) -> dict[str, list[dict]]:
    """Split a datalist into ``{"training", "validation", "test"}`` with MONAI's seeded partitioning.

    Args:
        items: the datalist.
        ratios: relative sizes of training / validation / test (3 non-negative numbers, sum > 0).
        seed: shuffling seed.
        stratify: keep class proportions (``partition_dataset_classes`` on ``label_key``), else ``partition_dataset``.
        label_key: key of the class label in each item.

    Returns:
        the three lists, keyed by :data:`SPLIT_KEYS`; every item is in one of them (the few that MONAI's rounding
        leaves out join the first split with a positive ratio, usually training).
    """
    if len(ratios) != 3 or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise ValueError(f"`ratios` must be 3 non-negative numbers with a positive sum, got {tuple(ratios)}.")
    items = list(items)
    if stratify:
        missing = [i for i, it in enumerate(items) if label_key not in it]
        if missing:
            raise ValueError(f"`stratify=True` needs `{label_key}` in every item; items {missing[:10]} lack it.")
        parts = partition_dataset_classes(
            items, [int(it[label_key]) for it in items], ratios=list(ratios), shuffle=True, seed=seed
        )
    else:
        parts = partition_dataset(items, ratios=list(ratios), shuffle=True, seed=seed)
    out = {k: list(p) for k, p in zip(SPLIT_KEYS, parts)}
    placed = {id(it) for p in out.values() for it in p}
    first = next(k for k, r in zip(SPLIT_KEYS, ratios) if r > 0)
    out[first] += [it for it in items if id(it) not in placed]  # MONAI rounds each split down: keep the remainder
    return out


def _to_json(value: Any, base: Path) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike) or (isinstance(value, str) and os.path.isabs(value)):
        p = Path(value).resolve() if isinstance(value, os.PathLike) else Path(value)
        try:
            return p.relative_to(base).as_posix()
        except ValueError:
            return str(p)
    return value


def write_datalist_json(splits: Mapping[str, Sequence[dict]], path: PathLike, **header: Any) -> Path:
    """Write a Decathlon-style datalist JSON (atomically); paths under the JSON's folder are stored relative.

    Item values that are ``Path`` objects (relative ones taken from the working directory) and absolute path
    strings are stored relative to the JSON's folder when they lie under it, else absolute; other strings are
    stored as given, so a relative path *string* must already be relative to the JSON's folder (as
    :func:`load_datalist_json` reads it).

    Args:
        splits: e.g. ``{"training": [...], "validation": [...], "test": [...]}``.
        path: destination ``.json``.
        header: extra top-level fields (e.g. ``name``, ``labels``, ``class_to_index``).

    Returns:
        the path written.
    """
    path = Path(path)
    base = path.parent.resolve()
    doc: dict[str, Any] = dict(header)
    for key, items in splits.items():
        doc[key] = [{k: _to_json(v, base) for k, v in it.items()} for it in items]
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=2))
    return path


def load_datalist_json(path: PathLike, key: str = "training") -> list[dict]:
    """Read one list from a datalist JSON with :func:`monai.data.load_decathlon_datalist` (paths made absolute)."""
    return load_decathlon_datalist(str(path), is_segmentation=False, data_list_key=key)
