"""``python -m monai_synth.privacy audit``: folders and datalists of PNG / DICOM / NIfTI, report schema, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from monai_synth.data.writers import write_image
from monai_synth.metrics.copy_detection import planted_copies
from monai_synth.privacy import EXIT_CLEAN, EXIT_COPIES, EXIT_ERROR, main

KEYS = {"flagged", "threshold", "method", "n_synthetic", "n_reference"}


def _textures(n: int, seed: int, size: int = 48) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.rand(n, 1, 8, 8, generator=g), size=(size, size), mode="bicubic", align_corners=False)
    x = x + 0.3 * F.interpolate(torch.rand(n, 1, 16, 16, generator=g), size=(size, size), mode="bilinear")
    return (x - x.amin((2, 3), keepdim=True)) / (x.amax((2, 3), keepdim=True) - x.amin((2, 3), keepdim=True))


def _write(folder, images, fmt="png", prefix="img"):
    folder.mkdir(parents=True, exist_ok=True)
    suffix = {"png": ".png", "dicom": ".dcm", "nifti": ".nii.gz"}[fmt]
    from pydicom.uid import generate_uid

    uids = {"study_uid": generate_uid(), "series_uid": generate_uid()} if fmt == "dicom" else None
    for i, x in enumerate(images):
        write_image(x.numpy(), folder / f"{prefix}_{i:03d}{suffix}", fmt, dicom_kwargs=uids)
    return folder


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    train, holdout, novel = _textures(30, 1), _textures(30, 2), _textures(6, 3)
    _write(root / "train" / "a", train[:15])
    _write(root / "train" / "b", train[15:], "dicom")
    _write(root / "holdout", holdout)
    copies = planted_copies(train[[3, 20]], ("flip", "shift", "gamma"), seed=0)
    syn = root / "synthetic"
    _write(syn / "x", novel, "nifti")
    _write(syn / "y", copies, prefix="copy")
    _write(root / "clean", novel)
    return root


def test_copies_are_flagged_with_their_reference(sets, tmp_path):
    out = tmp_path / "report.json"
    code = main(["audit", "--synthetic", str(sets / "synthetic"), "--reference", str(sets / "train"),
                 "--holdout", str(sets / "holdout"), "--out", str(out)])  # fmt: skip
    report = json.loads(out.read_text())
    assert code == EXIT_COPIES and KEYS <= set(report)
    assert report["n_synthetic"] == 8 and report["n_reference"] == 30 and not report["filtered"]
    assert {(r["synthetic"], r["reference"]) for r in report["flagged"]} == {
        ("y/copy_000.png", "a/img_003.png"), ("y/copy_001.png", "b/img_005.dcm"),
    }  # fmt: skip
    assert all(r["score"] >= report["threshold"] for r in report["flagged"])
    assert report["calibration"]["n_holdout"] == 30 and report["method"] == "copy_descriptor"


def test_a_clean_set_exits_zero_and_datalists_work(sets, tmp_path):
    datalist = tmp_path / "syn.json"
    datalist.write_text(json.dumps({"training": [{"image": str(p)} for p in sorted((sets / "clean").glob("*.png"))]}))
    out = tmp_path / "r.json"
    code = main(["audit", "--synthetic", str(datalist), "--reference", str(sets / "train"), "--threshold", "0.99",
                 "--out", str(out)])  # fmt: skip
    assert code == EXIT_CLEAN and json.loads(out.read_text())["flagged"] == []


def test_the_datalist_that_generation_writes(sets, tmp_path):
    """generate_dataset's datalist.json (relative paths, plus a "class_names" list) is a valid --synthetic."""
    from monai_synth.data.datalists import write_datalist_json

    folder = tmp_path / "gen"
    _write(folder / "png" / "class_0", _textures(3, 9), prefix="synth")
    items = [{"image": str(p), "label": 0} for p in sorted((folder / "png").rglob("*.png"))]
    write_datalist_json({"training": items}, folder / "datalist.json", class_names=["class_0"], synthetic=True)
    out = tmp_path / "r.json"
    code = main(["audit", "--synthetic", str(folder / "datalist.json"), "--reference", str(sets / "train"),
                 "--threshold", "0.99", "--out", str(out)])  # fmt: skip
    assert code == EXIT_CLEAN and json.loads(out.read_text())["n_synthetic"] == 3


def test_module_entry_point(sets, tmp_path):
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [sys.executable, "-m", "monai_synth.privacy", "audit", "--synthetic", str(sets / "synthetic" / "y"),
         "--reference", str(sets / "train"), "--threshold", "0.99", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == EXIT_COPIES, proc.stderr
    assert "2 of 2 synthetic images flagged" in proc.stdout and out.is_file()


def _bad_png(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return folder


@pytest.mark.parametrize(
    "args,words",
    [
        (lambda s, t: ["--synthetic", str(t / "missing"), "--reference", str(s / "train"), "--threshold", "0.9"],
         ["--synthetic", "missing"]),
        (lambda s, t: ["--synthetic", str(s / "clean"), "--reference", str(s / "train")], ["--holdout"]),
        (lambda s, t: ["--synthetic", str(_bad_png(t / "bad")), "--reference", str(s / "train"), "--threshold",
                       "0.9"], ["broken.png"]),
        (lambda s, t: ["--synthetic", str((t / "empty").mkdir() or t / "empty"), "--reference", str(s / "train"),
                       "--threshold", "0.9"], ["holds no images"]),
        (lambda s, t: ["--synthetic", str(s / "clean"), "--reference", str(s / "train"), "--threshold", "1.5"],
         ["threshold"]),
        (lambda s, t: ["--synthetic", str(s / "clean"), "--reference", str(s / "train"), "--holdout",
                       str(s / "holdout"), "--quantile", "2"], ["quantile"]),
    ],
    ids=["missing_folder", "no_calibration", "corrupt_png", "empty_folder", "threshold_range", "quantile_range"],
)
def test_bad_input_exits_two_naming_it(sets, tmp_path, capsys, args, words):
    code = main(["audit", *args(sets, tmp_path), "--out", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert code == EXIT_ERROR and all(w in err for w in words), err
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize(
    "doc,words",
    [
        ("{not json", ["not a readable datalist"]),
        (json.dumps({"training": [{"label": 1}]}), ["entry 0", "'image'"]),
        (json.dumps({"training": [{"image": "nowhere.png"}]}), ["do not exist", "nowhere.png"]),
        (json.dumps({"training": []}), ["lists no images"]),
        ("\ufeff" + json.dumps({"training": [{"image": 3}]}), ["entry 0"]),
    ],
    ids=["invalid_json", "no_image_key", "missing_file", "empty_list", "bom_and_non_string"],
)
def test_bad_datalists(sets, tmp_path, capsys, doc, words):
    dl = tmp_path / "dl.json"
    dl.write_text(doc, encoding="utf-8")
    code = main(["audit", "--synthetic", str(dl), "--reference", str(sets / "train"), "--threshold", "0.9",
                 "--out", str(tmp_path / "r.json")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == EXIT_ERROR and all(w in err for w in words), err


def test_usage_errors_exit_two(capsys):
    assert main(["audit", "--synthetic", "x"]) == EXIT_ERROR
    assert main(["nothing"]) == EXIT_ERROR
    assert main(["--help"]) == 0
    assert "audit" in capsys.readouterr().out


def test_non_finite_images_are_refused(sets, tmp_path, capsys):
    x = np.full((1, 16, 16), np.nan, np.float32)
    import nibabel as nib

    (tmp_path / "n").mkdir()
    nib.save(nib.Nifti1Image(x[0], np.eye(4)), str(tmp_path / "n" / "nan.nii.gz"))
    code = main(["audit", "--synthetic", str(tmp_path / "n"), "--reference", str(sets / "train"), "--threshold",
                 "0.9", "--out", str(tmp_path / "r.json")])  # fmt: skip
    assert code == EXIT_ERROR and "nan.nii.gz" in capsys.readouterr().err
