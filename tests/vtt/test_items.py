"""Discovery of study images from folders and datalists, and its errors (each names the path)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from vtt_helpers import DICOM_NOEXT, DICOM_STEM, REAL_STEMS, SYN_STEMS

from monai_synth.apps.vtt import REAL, SYNTHETIC, discover_images
from monai_synth.data import write_png_uint8


def test_folder_is_searched_recursively_for_png_jpeg_and_dicom(study_files, tmp_path):
    (study_files.real / ".hidden").mkdir()
    write_png_uint8(np.zeros((8, 8), np.uint8), study_files.real / ".hidden" / "skipped.png")
    write_png_uint8(np.zeros((8, 8), np.uint8), study_files.real / ".dotfile.png")
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(study_files.real / "photojpeg.JPG")
    items = discover_images(study_files.real, REAL)
    names = sorted(Path(it.path).name for it in items)
    assert names == sorted([f"{s}.png" for s in REAL_STEMS] + [f"{DICOM_STEM}.dcm", DICOM_NOEXT, "photojpeg.JPG"])
    assert all(it.truth == REAL and it.label is None and Path(it.path).is_absolute() for it in items)
    synthetic = discover_images(study_files.synthetic, SYNTHETIC)  # notes.txt is not an image
    assert sorted(Path(it.path).stem for it in synthetic) == SYN_STEMS


def test_datalist_gives_labels_and_relative_paths(study_files, tmp_path):
    folder = study_files.synthetic.name
    doc = {"training": [{"image": f"{folder}/{s}.png", "label": i % 2} for i, s in enumerate(SYN_STEMS)]}
    path = tmp_path / "images" / "synthetic.json"
    path.write_text(json.dumps(doc))
    items = discover_images(path, SYNTHETIC)
    assert [it.label for it in sorted(items, key=lambda it: it.path)] == ["0", "1", "0", "1", "0"]
    assert all(Path(it.path).is_file() for it in items)


# case -> (files to create: relative path -> text, or None for a folder; the PATH given; error; message)
BAD_PATHS = {
    "missing-path": ({}, "missing", FileNotFoundError, "missing' does not exist"),
    "empty-folder": ({"empty": None}, "empty", ValueError, "no PNG, JPEG or DICOM images under .*empty'"),
    "only-other-files": ({"docs/a.txt": "x"}, "docs", ValueError, "no PNG, JPEG or DICOM images under .*docs'"),
    "not-a-folder-or-json": ({"a.txt": "x"}, "a.txt", ValueError, "a.txt' is neither a folder"),
    "bad-json": ({"bad.json": "{no"}, "bad.json", ValueError, "bad.json' is not valid JSON"),
    "no-training-key": ({"k.json": '{"test": []}'}, "k.json", ValueError, "k.json' has no readable 'training'"),
    "missing-image": ({"g.json": '{"training": [{"image": "nothere.png"}]}'}, "g.json", FileNotFoundError,
                      "nothere.png' does not exist"),
    "empty-datalist": ({"e.json": '{"training": []}'}, "e.json", ValueError, "e.json' lists no images"),
}  # fmt: skip


@pytest.mark.parametrize("files, given, exc, match", BAD_PATHS.values(), ids=BAD_PATHS.keys())
def test_bad_paths_name_the_path(tmp_path, files, given, exc, match):
    for rel, text in files.items():
        p = tmp_path / rel
        if text is None:
            p.mkdir(parents=True)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
    with pytest.raises(exc, match=match):
        discover_images(tmp_path / given, REAL)


def test_truth_must_be_real_or_synthetic(study_files):
    with pytest.raises(ValueError, match="`truth` must be one of"):
        discover_images(study_files.real, "fake")
