"""The images of a reader study: discovery from a folder or a datalist JSON, each with its truth and optional label."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from monai_synth.data.datalists import load_datalist_json
from monai_synth.data.dicom import DICOM_SUFFIXES, is_dicom_file

__all__ = ["REAL", "SYNTHETIC", "TRUTHS", "IMAGE_SUFFIXES", "DICOM_SUFFIXES", "StudyItem", "discover_images"]

REAL = "real"
SYNTHETIC = "synthetic"
TRUTHS = (REAL, SYNTHETIC)
"""What a reader answers, and what an image is: the Visual Turing Test of seed 001 ("Real" or "Fake")."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class StudyItem:
    """One image of the study.

    Attributes:
        path: absolute path of the image file (or DICOM series folder, from a datalist).
        truth: :data:`REAL` or :data:`SYNTHETIC`.
        label: the class label from a datalist (as text), ``None`` when unknown.
    """

    path: str
    truth: str
    label: str | None = None


def _check_truth(truth: str) -> str:
    if truth not in TRUTHS:
        raise ValueError(f"`truth` must be one of {list(TRUTHS)}, got {truth!r}.")
    return truth


def _is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES or is_dicom_file(path)


def _folder_items(root: Path, truth: str) -> list[StudyItem]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if not name.startswith(".") and p.is_file() and _is_image_file(p):
                found.append(StudyItem(str(p.resolve()), truth))
    if not found:
        raise ValueError(
            f"no PNG, JPEG or DICOM images under {str(root)!r} (searched recursively, hidden files skipped); give a "
            "folder that holds the images or a datalist JSON."
        )
    return found


def _datalist_items(path: Path, truth: str) -> list[StudyItem]:
    try:
        entries = load_datalist_json(path, key="training")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"datalist {str(path)!r} is not valid JSON ({e}).") from e
    except ValueError as e:
        raise ValueError(
            f"datalist {str(path)!r} has no readable 'training' list ({e}); expected "
            '{"training": [{"image": "path", "label": 0}, ...]}.'
        ) from e
    items = []
    for i, entry in enumerate(entries):
        image = entry.get("image") if isinstance(entry, dict) else None
        if not isinstance(image, str) or not image:
            raise ValueError(f"datalist {str(path)!r}: training[{i}] has no 'image' path.")
        p = Path(image)
        if not p.exists():
            raise FileNotFoundError(f"datalist {str(path)!r}: training[{i}] image {image!r} does not exist.")
        label = entry.get("label")
        items.append(StudyItem(str(p.resolve()), truth, None if label is None else str(label)))
    if not items:
        raise ValueError(f"datalist {str(path)!r} lists no images under 'training'.")
    return items


def discover_images(path: str | os.PathLike, truth: str) -> list[StudyItem]:
    """The images of one arm of the study (all real or all synthetic).

    Args:
        path: a folder, searched recursively for PNG, JPEG and DICOM files (``.dcm``, ``.dicom`` or extensionless
            files with the DICOM preamble; hidden files and folders are skipped), or a datalist ``.json``
            (``{"training": [{"image": path, "label": ...}, ...]}``, paths relative to the JSON's folder; an image
            may be a DICOM series folder). Labels are known only from a datalist.
        truth: :data:`REAL` or :data:`SYNTHETIC`.

    Returns:
        one :class:`StudyItem` per image, in sorted path order (duplicates dropped).

    Raises:
        FileNotFoundError: ``path`` (or an image a datalist names) does not exist.
        ValueError: no image found, or an unreadable datalist (each message names the path).
    """
    truth = _check_truth(truth)
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(
            f"{truth} images: {str(p)!r} does not exist; give a folder of images or a datalist JSON."
        )
    if p.is_dir():
        items = _folder_items(p, truth)
    elif p.suffix.lower() == ".json":
        items = _datalist_items(p, truth)
    else:
        raise ValueError(f"{truth} images: {str(p)!r} is neither a folder nor a datalist .json file.")
    unique = {it.path: it for it in items}
    return [unique[k] for k in sorted(unique)]
