"""Bad-input table: every case must raise a clear error type whose message names the file / field (and, where it
helps, what to do), and must leave no partial output behind.

Each case builds its inputs in ``tmp_path`` (real shared files are copied before being corrupted), takes a snapshot of
the files there, runs the call, and checks (1) the exception type, (2) that every listed word is in the message
(case-insensitive), (3) that the call created no file under ``tmp_path``.

Running as root: ``chmod 0o500`` does not stop root from writing, so "unwritable folder" cases use a path below a
regular *file* (no user can create it) and a monkeypatched ``os.access`` (what ``ensure_writable_dir`` consults).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import torch
from helpers import CT_SLICE, CXR_J2K, copy_shared, snapshot, tiny_unet

from monai_synth.data import DicomReadError, load_dicom


@dataclass
class Case:
    """``call()`` must raise ``exc`` with every string of ``words`` in its message."""

    call: Callable[[], Any]
    exc: type[BaseException] | tuple[type[BaseException], ...]
    words: tuple[str, ...] = ()
    cleanup: list[Callable[[], None]] = field(default_factory=list)


class Env:
    """What a case builder gets: a scratch folder, the pytest ``request`` (for ``shared_data``) and monkeypatch."""

    def __init__(self, tmp_path: Path, request, monkeypatch) -> None:
        self.tmp = tmp_path
        self.request = request
        self.monkeypatch = monkeypatch

    @property
    def shared(self) -> Path:
        return self.request.getfixturevalue("shared_data")

    def ct_copy(self, folder: str = "in", name: str | None = None) -> Path:
        path = copy_shared(self.shared, CT_SLICE, self.tmp / folder)
        if name:
            path = path.rename(path.with_name(name))
        return path


# ------------------------------------------------------------------------------------------------ DICOM cases
def dicom_truncated_half(env: Env) -> Case:
    p = env.ct_copy()
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return Case(lambda: load_dicom(p), DicomReadError, (p.name, "truncated"))


def dicom_truncated_in_header(env: Env) -> Case:
    p = env.ct_copy()
    p.write_bytes(p.read_bytes()[:200])  # inside the 128-byte preamble + a little of the file meta
    return Case(lambda: load_dicom(p), DicomReadError, (p.name,))


def dicom_not_dicom_named_dcm(env: Env) -> Case:
    p = env.tmp / "in" / "notes.dcm"
    p.parent.mkdir(parents=True)
    p.write_text("patient list\nthis is not a DICOM file\n" * 20)
    return Case(lambda: load_dicom(p), DicomReadError, (p.name, "not a readable DICOM"))


def dicom_empty_file(env: Env) -> Case:
    p = env.tmp / "in" / "empty.dcm"
    p.parent.mkdir(parents=True)
    p.write_bytes(b"")
    return Case(lambda: load_dicom(p), DicomReadError, (p.name,))


def dicom_missing_pixeldata(env: Env) -> Case:
    p = env.ct_copy()
    ds = pydicom.dcmread(p)
    del ds.PixelData
    ds.save_as(p)
    return Case(lambda: load_dicom(p), DicomReadError, (p.name, "PixelData"))


def dicom_j2k_without_decoder(env: Env) -> Case:
    """JPEG 2000 chest X-ray with the pylibjpeg (and Pillow) plugins made unavailable: the message names the package."""
    from pydicom.pixels import get_decoder

    p = copy_shared(env.shared, CXR_J2K, env.tmp / "in")
    decoder = get_decoder(pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID)
    env.monkeypatch.setattr(decoder, "_available", {})
    return Case(lambda: load_dicom(p), DicomReadError, (p.name, "pip install", "pylibjpeg-openjpeg"))


def _series(env: Env, n: int = 3) -> list[Path]:
    """``n`` copies of the CT slice forming a valid series (new SOP UIDs, positions 5 mm apart)."""
    folder = env.tmp / "series"
    paths = []
    for i in range(n):
        p = env.ct_copy("series", f"s{i}.dcm")
        ds = pydicom.dcmread(p)
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [0.0, 0.0, 5.0 * i]
        ds.save_as(p)
        paths.append(p)
    assert folder.is_dir()
    return paths


def dicom_folder_mixed_series(env: Env) -> Case:
    paths = _series(env)
    ds = pydicom.dcmread(paths[1])
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(paths[1])
    return Case(lambda: load_dicom(paths[0].parent), DicomReadError, ("series", "s1.dcm", "own folder"))


def dicom_folder_mixed_slice_sizes(env: Env) -> Case:
    paths = _series(env)
    ds = pydicom.dcmread(paths[2])
    arr = ds.pixel_array[:256, :256].copy()
    ds.Rows, ds.Columns = arr.shape
    ds.PixelData = arr.tobytes()
    ds.save_as(paths[2])
    return Case(lambda: load_dicom(paths[0].parent), DicomReadError, ("different sizes", "s2.dcm"))


def dicom_folder_duplicate_positions(env: Env) -> Case:
    paths = _series(env)
    ds = pydicom.dcmread(paths[2])
    ds.ImagePositionPatient = [0.0, 0.0, 0.0]
    ds.save_as(paths[2])
    return Case(lambda: load_dicom(paths[0].parent), DicomReadError, ("same slice position", "s2.dcm"))


def dicom_folder_uneven_spacing(env: Env) -> Case:
    """Slices at z = 0, 5, 20 mm (a missing slice): a single 'spacing' would misplace every slice."""
    paths = _series(env)
    ds = pydicom.dcmread(paths[2])
    ds.ImagePositionPatient = [0.0, 0.0, 20.0]
    ds.save_as(paths[2])
    return Case(lambda: load_dicom(paths[0].parent), DicomReadError, ("spacing", "s2.dcm"))


def dicom_folder_mixed_pixel_spacing(env: Env) -> Case:
    """One slice with a different in-plane PixelSpacing: stacking it would distort that slice."""
    paths = _series(env)
    ds = pydicom.dcmread(paths[1])
    ds.PixelSpacing = [0.5, 0.5]
    ds.save_as(paths[1])
    return Case(lambda: load_dicom(paths[0].parent), DicomReadError, ("PixelSpacing", "s1.dcm"))


def dicom_folder_empty(env: Env) -> Case:
    folder = env.tmp / "empty_series"
    folder.mkdir()
    return Case(lambda: load_dicom(folder), DicomReadError, ("empty_series", "no DICOM files"))


def dicom_path_missing(env: Env) -> Case:
    p = env.tmp / "nowhere" / "missing.dcm"
    return Case(lambda: load_dicom(p), FileNotFoundError, ("missing.dcm", "does not exist"))


def ct_without_rescale_into_scale_to_hu(env: Env) -> Case:
    """Stored CT values without RescaleSlope/Intercept (tags deleted): ScaleToHU must refuse to guess."""
    from monai_synth.transforms import ScaleToHU

    p = env.ct_copy()
    ds = pydicom.dcmread(p)
    del ds.RescaleSlope, ds.RescaleIntercept
    stored = ds.pixel_array[None].astype(np.float32)
    return Case(lambda: ScaleToHU()(stored), ValueError, ("RescaleSlope", "RescaleIntercept", "slope="))


# ------------------------------------------------------------------------------------------------ NIfTI / arrays
def _volume_with(env: Env, value: float, name: str) -> Path:
    arr = np.zeros((4, 8, 8), np.float32)
    arr[1, 3, 4] = value  # in the middle slice (last NIfTI axis), the 2D image that load_image_2d reads
    p = env.tmp / "in" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    if name.endswith(".nii.gz"):
        import nibabel as nib

        nib.save(nib.Nifti1Image(arr, np.eye(4)), p)
    else:
        import SimpleITK as sitk

        sitk.WriteImage(sitk.GetImageFromArray(arr), str(p))
    return p


def nifti_with_nan(env: Env) -> Case:
    """A NIfTI training image with a NaN voxel, as the classifier engine loads file items (MONAI's NibabelReader)."""
    from monai_synth.engines.classification import _load_image

    p = _volume_with(env, float("nan"), "bad.nii.gz")
    return Case(lambda: _load_image(p), ValueError, ("bad.nii.gz", "NaN"))


def nifti_with_inf(env: Env) -> Case:
    from monai_synth.engines.classification import _load_image

    p = _volume_with(env, float("inf"), "bad.nii.gz")
    return Case(lambda: _load_image(p), ValueError, ("bad.nii.gz", "Inf"))


def metaimage_with_nan_sitk(env: Env) -> Case:
    from monai.transforms import LoadImage

    p = _volume_with(env, float("nan"), "bad.mha")
    return Case(lambda: LoadImage(reader="SimpleITKReader", image_only=True)(p), ValueError, ("bad.mha", "NaN"))


def image_wrong_rank_multiwindow(env: Env) -> Case:
    from monai_synth.transforms import MultiWindow

    return Case(lambda: MultiWindow()(np.zeros((3, 8, 8), np.float32)), ValueError, ("single-channel", "(3, 8, 8)"))


def image_wrong_rank_edge_weight(env: Env) -> Case:
    from monai_synth.transforms import GaussianEdgeWeight

    return Case(lambda: GaussianEdgeWeight()(np.zeros((8,), np.float32)), ValueError, ("channel-first", "(8,)"))


def image_zero_size_privacy_filter(env: Env) -> Case:
    from monai_synth.engines.privacy import build_near_copy_filter

    train = np.zeros((0, 1, 8, 8), np.float32)
    return Case(lambda: build_near_copy_filter(train, threshold=0.9), ValueError, ("empty",))


def image_wrong_rank_metrics(env: Env) -> Case:
    from monai_synth.metrics.memorization import memorization_audit

    return Case(
        lambda: memorization_audit(np.zeros((8, 8)), np.zeros((2, 1, 8, 8)), threshold=0.1), ValueError, ("(N, C",)
    )


def image_wrong_intensity_range(env: Env) -> Case:
    from monai_synth.engines.privacy import build_near_copy_filter

    syn = -np.ones((2, 1, 8, 8), np.float32)  # model range [-1, 1] passed where [0, 1] is expected
    return Case(lambda: build_near_copy_filter(syn, threshold=0.9), ValueError, ("[0, 1]",))


def network_wrong_channel_count(env: Env) -> Case:
    from monai_synth.engines.diffusion import build_scheduler
    from monai_synth.inferers import sample

    model = tiny_unet(num_classes=2, in_channels=1)
    sched = build_scheduler("ddim", num_train_timesteps=10, num_inference_steps=2)
    return Case(
        lambda: sample(model, sched, shape=(2, 3, 8, 8), class_labels=torch.tensor([0, 1])),
        ValueError,
        ("channels", "3", "1"),
    )


def demo_dicom_writer_3d(env: Env) -> Case:
    from monai_synth.data import write_demo_dicom

    out = env.tmp / "out" / "x.dcm"
    return Case(lambda: write_demo_dicom(out, np.zeros((2, 8, 8), np.uint16), "ct"), ValueError, ("2D", "(2, 8, 8)"))


# ------------------------------------------------------------------------------------------------ label CSV
def _csv_case(env: Env, rows: list[dict], columns=("id", "label")) -> tuple[Path, Path]:
    root = env.tmp / "dicom_root"
    for sid in ("a", "b"):
        (root / sid).mkdir(parents=True)
    p = env.tmp / "labels.csv"
    with open(p, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns))
        w.writeheader()
        w.writerows(rows)
    return root, p


def label_csv_unknown_id(env: Env) -> Case:
    from monai_synth.data import dicom_folder_datalist

    root, p = _csv_case(env, [{"id": "a", "label": 0}, {"id": "b", "label": 1}, {"id": "zz", "label": 1}])
    return Case(lambda: dicom_folder_datalist(root, p), ValueError, ("labels.csv", "'zz'"))


def label_csv_missing_id(env: Env) -> Case:
    from monai_synth.data import dicom_folder_datalist

    root, p = _csv_case(env, [{"id": "a", "label": 0}])
    return Case(lambda: dicom_folder_datalist(root, p), ValueError, ("labels.csv", "'b'", "no label"))


def label_csv_missing_column(env: Env) -> Case:
    from monai_synth.data import dicom_folder_datalist

    root, p = _csv_case(env, [{"id": "a", "diagnosis": 0}], columns=("id", "diagnosis"))
    return Case(lambda: dicom_folder_datalist(root, p), ValueError, ("labels.csv", "label", "lacks columns"))


def label_csv_duplicate_id(env: Env) -> Case:
    from monai_synth.data import dicom_folder_datalist

    root, p = _csv_case(env, [{"id": "a", "label": 0}, {"id": "a", "label": 1}, {"id": "b", "label": 1}])
    return Case(lambda: dicom_folder_datalist(root, p), ValueError, ("labels.csv", "'a'", "twice"))


# ------------------------------------------------------------------------------------------------ options
def window_preset_unknown(env: Env) -> Case:
    from monai_synth.transforms import HUWindow

    return Case(lambda: HUWindow("lungs"), ValueError, ("lungs", "lung", "bone"))


def multiwindow_preset_unknown(env: Env) -> Case:
    from monai_synth.transforms import MultiWindow

    return Case(lambda: MultiWindow(["lung", "liver"]), ValueError, ("liver",))


def classifier_lr_negative(env: Env) -> Case:
    from monai_synth.engines import ClassifierRunConfig

    return Case(lambda: ClassifierRunConfig(lr=-1e-3), ValueError, ("lr", "> 0", "-0.001"))


def classifier_lr_nan(env: Env) -> Case:
    from monai_synth.engines import ClassifierRunConfig

    return Case(lambda: ClassifierRunConfig(lr=float("nan")), ValueError, ("lr", "finite"))


def diffusion_trainer_lr_negative(env: Env) -> Case:
    from monai_synth.engines.diffusion import build_diffusion_trainer, build_scheduler

    model = tiny_unet()
    sched = build_scheduler("ddpm", num_train_timesteps=10)
    ckpt = env.tmp / "ckpt"
    return Case(
        lambda: build_diffusion_trainer(model, sched, [], max_epochs=1, num_classes=2, lr=-1.0, checkpoint_dir=ckpt),
        ValueError,
        ("learning rate", "-1"),
    )


def guidance_scale_nan(env: Env) -> Case:
    from monai_synth.engines.diffusion import build_scheduler
    from monai_synth.inferers import sample

    model = tiny_unet()
    sched = build_scheduler("ddim", num_train_timesteps=10, num_inference_steps=2)
    return Case(
        lambda: sample(model, sched, shape=(2, 1, 8, 8), class_labels=torch.tensor([0, 1]), guidance_scale=math.nan),
        ValueError,
        ("guidance_scale", "nan"),
    )


def ddim_steps_above_training_steps(env: Env) -> Case:
    from monai_synth.engines.diffusion import build_scheduler

    return Case(
        lambda: build_scheduler("ddim", num_train_timesteps=10, num_inference_steps=50),
        ValueError,
        ("num_inference_steps", "50", "10"),
    )


def real_fraction_above_one(env: Env) -> Case:
    from monai_synth.engines import ClassifierRunConfig

    return Case(lambda: ClassifierRunConfig(real_fraction=1.5), ValueError, ("real_fraction", "[0, 1]", "1.5"))


def real_fraction_negative(env: Env) -> Case:
    from monai_synth.engines import ClassifierRunConfig

    return Case(lambda: ClassifierRunConfig(real_fraction=-0.1), ValueError, ("real_fraction", "[0, 1]"))


def label_dropout_above_one(env: Env) -> Case:
    from monai_synth.engines.diffusion import build_scheduler
    from monai_synth.inferers import ClassConditionedDiffusionInferer

    sched = build_scheduler("ddpm", num_train_timesteps=10)
    return Case(
        lambda: ClassConditionedDiffusionInferer(sched, num_classes=2, cond_drop_prob=1.5),
        ValueError,
        ("cond_drop_prob", "[0, 1]", "1.5"),
    )


def label_dropout_negative(env: Env) -> Case:
    from monai_synth.inferers import drop_class_labels

    return Case(lambda: drop_class_labels(torch.tensor([0, 1]), 2, -0.2), ValueError, ("[0, 1]", "-0.2"))


def class_label_out_of_range(env: Env) -> Case:
    from monai_synth.engines.diffusion import build_scheduler
    from monai_synth.inferers import ClassConditionedDiffusionInferer

    sched = build_scheduler("ddpm", num_train_timesteps=10)
    inf = ClassConditionedDiffusionInferer(sched, num_classes=2, cond_drop_prob=0.0)
    x = torch.zeros(2, 1, 8, 8)
    return Case(
        lambda: inf(x, tiny_unet(), torch.zeros_like(x), torch.tensor([1, 2]), class_labels=torch.tensor([0, 7])),
        ValueError,
        ("class_labels", "[0, 2]", "7"),
    )


def unknown_scheduler_kind(env: Env) -> Case:
    from monai_synth.engines.diffusion import build_scheduler

    return Case(lambda: build_scheduler("ddpx"), ValueError, ("ddpx", "ddim", "ddpm"))


def unknown_loss(env: Env) -> Case:
    from monai_synth.engines.diffusion import get_loss_function

    return Case(lambda: get_loss_function("l3"), ValueError, ("l3", "huber"))


def split_ratios_invalid(env: Env) -> Case:
    from monai_synth.data import split_datalist

    items = [{"image": str(i), "label": i % 2} for i in range(10)]
    return Case(lambda: split_datalist(items, ratios=(0.8, -0.1, 0.3)), ValueError, ("ratios", "non-negative"))


def privacy_threshold_nan(env: Env) -> Case:
    from monai_synth.engines.privacy import build_near_copy_filter

    images = np.zeros((2, 1, 8, 8), np.float32)
    return Case(lambda: build_near_copy_filter(images, threshold=math.nan), ValueError, ("threshold", "nan"))


def _generate(env: Env, **kw):
    from monai_synth.engines.diffusion import build_scheduler
    from monai_synth.engines.generate import generate_dataset

    args = dict(num_per_class=1, num_classes=2, image_size=8, formats=("png", "dicom"), num_inference_steps=2,
                batch_size=2, progress=False)  # fmt: skip
    out = kw.pop("out_dir", env.tmp / "gen")
    args.update(kw)
    return lambda: generate_dataset(tiny_unet(), build_scheduler("ddim", num_train_timesteps=10), out, **args)


def generate_unknown_format(env: Env) -> Case:
    return Case(_generate(env, formats=("png", "jpeg")), ValueError, ("formats", "jpeg", "png"))


def generate_guidance_scale_nan(env: Env) -> Case:
    return Case(_generate(env, guidance_scale=math.nan), ValueError, ("guidance_scale", "nan"))


def generate_wrong_channel_count(env: Env) -> Case:
    return Case(_generate(env, in_channels=3), ValueError, ("channels", "3", "1"))


def generate_into_unwritable_folder(env: Env) -> Case:
    blocker = env.tmp / "blocker"
    blocker.write_text("file")
    return Case(_generate(env, out_dir=blocker / "gen"), PermissionError, ("blocker", "writable location"))


# ------------------------------------------------------------------------------------------------ output folders
def output_dir_below_regular_file(env: Env) -> Case:
    from monai_synth.data import write_datalist_json

    blocker = env.tmp / "blocker"
    blocker.write_text("a regular file, so nobody (root included) can create a folder below it")
    out = blocker / "run" / "datalist.json"
    return Case(lambda: write_datalist_json({"training": []}, out), PermissionError, ("blocker", "writable location"))


def output_dir_not_writable(env: Env) -> Case:
    """``os.access`` says no (what a 0o500 folder looks like to a non-root user)."""
    from monai_synth.utils.io import atomic_torch_save

    out = env.tmp / "readonly"
    out.mkdir()
    real_access = os.access
    env.monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == out else real_access(p, mode))
    return Case(lambda: atomic_torch_save({"w": torch.zeros(2)}, out / "ckpt.pt"), PermissionError, ("readonly",))


def checkpoint_save_into_unwritable(env: Env) -> Case:
    from monai_synth.handlers.checkpoint import save_checkpoint

    blocker = env.tmp / "blocker"
    blocker.write_text("file")
    model = torch.nn.Linear(2, 2)
    return Case(lambda: save_checkpoint(blocker / "ck" / "c.pt", model), PermissionError, ("blocker",))


# ------------------------------------------------------------------------------------------------ tracking
def _toy_items(n: int = 4) -> list[dict]:
    return [{"image": np.zeros((1, 8, 8), np.float32), "label": i % 2} for i in range(n)]


def mlflow_unreachable_classifier(env: Env) -> Case:
    """Documented behaviour (train_classifier docstring): on_unreachable='raise' raises before any training/output."""
    from monai_synth.engines import ClassifierRunConfig, train_classifier
    from monai_synth.handlers.mlflow_extras import TrackingUnavailableError

    uri = "http://127.0.0.1:9"  # discard port: nothing listens
    out = env.tmp / "runs"
    cfg = ClassifierRunConfig(epochs=1, batch_size=2)
    items = _toy_items()
    return Case(
        lambda: train_classifier(cfg, items, items, items, output_dir=out, tracking_uri=uri),
        TrackingUnavailableError,
        (uri, "on_unreachable"),
    )


def mlflow_unreachable_study(env: Env) -> Case:
    from monai_synth.apps.augmentation.study import run_study
    from monai_synth.engines import ClassifierRunConfig
    from monai_synth.handlers.mlflow_extras import TrackingUnavailableError

    uri = "http://127.0.0.1:9"
    items = _toy_items()
    grid = [ClassifierRunConfig(epochs=1, batch_size=2, seed=s) for s in (0, 1)]
    data = {"train": items, "val": items, "test": items}
    return Case(
        lambda: run_study(grid, data, tracking_uri=uri, output_dir=env.tmp / "study", progress=False),
        TrackingUnavailableError,
        (uri,),
    )


def mlflow_file_store_uri(env: Env) -> Case:
    from monai_synth.handlers.mlflow_extras import resolve_tracking_uri

    return Case(lambda: resolve_tracking_uri(str(env.tmp / "mlruns")), ValueError, ("file store", "sqlite:///"))


# ------------------------------------------------------------------------------------------------ pickles
def npz_object_arrays(env: Env) -> Case:
    from monai_synth.data import load_medmnist_npz

    p = env.tmp / "in" / "objects.npz"
    p.parent.mkdir(parents=True)
    np.savez(p, train_images=np.array([{"rm -rf": "/"}], dtype=object), train_labels=np.zeros(1, np.int64))
    return Case(lambda: load_medmnist_npz(p, "train"), ValueError, ("objects.npz", "allow_pickle"))


def npz_missing_keys(env: Env) -> Case:
    from monai_synth.data import load_medmnist_npz

    p = env.tmp / "in" / "keys.npz"
    p.parent.mkdir(parents=True)
    np.savez(p, images=np.zeros((2, 8, 8), np.uint8))
    return Case(lambda: load_medmnist_npz(p, "train"), ValueError, ("keys.npz", "train_images"))


class _Payload:
    """A non-tensor object; unpickling it with weights_only=False would run arbitrary code (here: nothing)."""

    def __reduce__(self):
        return (print, ("pickle payload executed",))


def checkpoint_with_pickled_object(env: Env) -> Case:
    from monai_synth.handlers.checkpoint import load_checkpoint

    p = env.tmp / "in" / "evil.pt"
    p.parent.mkdir(parents=True)
    torch.save({"network": {"w": torch.zeros(1)}, "payload": _Payload()}, p)
    return Case(lambda: load_checkpoint(p, network=torch.nn.Linear(1, 1)), ValueError, ("evil.pt", "weights_only"))


def image_set_with_pickled_object(env: Env) -> Case:
    from monai_synth.evaluate import load_image_set

    p = env.tmp / "in" / "images.pt"
    p.parent.mkdir(parents=True)
    torch.save({"images": torch.zeros(2, 1, 4, 4), "payload": _Payload()}, p)
    return Case(lambda: load_image_set(p), ValueError, ("images.pt", "weights_only"))


def checkpoint_truncated(env: Env) -> Case:
    from monai_synth.handlers.checkpoint import load_checkpoint

    p = env.tmp / "in" / "cut.pt"
    p.parent.mkdir(parents=True)
    torch.save({"network": torch.nn.Linear(4, 4).state_dict()}, p)
    p.write_bytes(p.read_bytes()[:100])
    return Case(lambda: load_checkpoint(p, network=torch.nn.Linear(4, 4)), ValueError, ("cut.pt", "truncated"))


def checkpoint_missing_optimizer(env: Env) -> Case:
    from monai_synth.handlers.checkpoint import load_checkpoint, save_checkpoint

    net = torch.nn.Linear(2, 2)
    p = save_checkpoint(env.tmp / "in" / "c.pt", net)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    return Case(lambda: load_checkpoint(p, network=net, optimizer=opt), ValueError, ("c.pt", "optimizer"))


# ------------------------------------------------------------------------------------------------ issue 13 cases
def _ct_with(env: Env, name: str, **tags) -> Path:
    """The CT slice with header fields replaced (a malformed file)."""
    p = env.ct_copy(name=name)
    ds = pydicom.dcmread(p)
    for k, v in tags.items():
        setattr(ds, k, v)
    ds.save_as(p)
    return p


def dicom_rescale_slope_zero(env: Env) -> Case:
    p = _ct_with(env, "slope0.dcm", RescaleSlope=0)
    return Case(lambda: load_dicom(p, rescale=True), DicomReadError, ("slope0.dcm", "RescaleSlope", "0"))


def dicom_rescale_slope_nan(env: Env) -> Case:
    p = _ct_with(env, "slope_nan.dcm", RescaleSlope="NaN")
    return Case(lambda: load_dicom(p, rescale=True), DicomReadError, ("slope_nan.dcm", "non-finite"))


def dicom_rescale_intercept_inf(env: Env) -> Case:
    p = _ct_with(env, "icpt_inf.dcm", RescaleIntercept="inf")
    return Case(lambda: load_dicom(p, rescale=True), DicomReadError, ("icpt_inf.dcm", "RescaleIntercept"))


def dicom_bits_stored_above_allocated(env: Env) -> Case:
    p = _ct_with(env, "bits.dcm", BitsStored=20)
    return Case(lambda: load_dicom(p), DicomReadError, ("bits.dcm", "BitsStored 20", "BitsAllocated"))


def dicom_bits_stored_zero(env: Env) -> Case:
    p = _ct_with(env, "bits0.dcm", BitsStored=0)
    return Case(lambda: load_dicom(p), DicomReadError, ("bits0.dcm", "BitsStored 0"))


def dicom_pixel_representation_invalid(env: Env) -> Case:
    p = _ct_with(env, "pixrep.dcm", PixelRepresentation=2)
    return Case(lambda: load_dicom(p), DicomReadError, ("pixrep.dcm", "PixelRepresentation 2"))


def dicom_high_bit_mismatch(env: Env) -> Case:
    ds = pydicom.dcmread(env.ct_copy(folder="probe"), stop_before_pixels=True)
    p = _ct_with(env, "highbit.dcm", HighBit=int(ds.BitsStored) - 3)
    return Case(lambda: load_dicom(p), DicomReadError, ("highbit.dcm", "HighBit"))


def dicom_decompression_bomb(env: Env) -> Case:
    """A header announcing 65535 x 65535 x 1000 frames: refused before any pixel is decoded."""
    p = _ct_with(env, "bomb.dcm", Rows=65535, Columns=65535, NumberOfFrames=1000)
    return Case(lambda: load_dicom(p), DicomReadError, ("bomb.dcm", "above the cap", "MAX_DECODED_PIXELS"))


def dicom_bomb_through_load_image_2d(env: Env) -> Case:
    from monai_synth.data import load_image_2d

    p = _ct_with(env, "bomb2.dcm", Rows=60000, Columns=60000)
    return Case(lambda: load_image_2d(p), DicomReadError, ("bomb2.dcm", "cap"))


def _raw_csv(env: Env, data: bytes) -> tuple[Path, Path]:
    root = env.tmp / "dicom_root"
    for sid in ("a", "b"):
        (root / sid).mkdir(parents=True, exist_ok=True)
    p = env.tmp / "labels.csv"
    p.write_bytes(data)
    return root, p


def label_csv_latin1(env: Env) -> Case:
    from monai_synth.data import dicom_folder_datalist

    root, p = _raw_csv(env, "id,label\na,0\nb,1\nJos\u00e9,1\n".encode("latin-1"))
    return Case(lambda: dicom_folder_datalist(root, p), ValueError, ("labels.csv", "not UTF-8", "line 4"))


def label_csv_utf16(env: Env) -> Case:
    from monai_synth.data import dicom_folder_datalist

    root, p = _raw_csv(env, "id,label\na,0\nb,1\n".encode("utf-16"))
    return Case(lambda: dicom_folder_datalist(root, p), ValueError, ("labels.csv", "not UTF-8", "line 1"))


def label_csv_empty_file(env: Env) -> Case:
    from monai_synth.data import dicom_folder_datalist

    root, p = _raw_csv(env, b"")
    return Case(lambda: dicom_folder_datalist(root, p), ValueError, ("labels.csv", "empty", "header"))


def label_csv_short_row(env: Env) -> Case:
    from monai_synth.data import dicom_folder_datalist

    root, p = _raw_csv(env, b"id,label\na,0\nb\n")
    return Case(lambda: dicom_folder_datalist(root, p), ValueError, ("labels.csv", "line 3", "fewer fields"))


def label_csv_binary_garbage(env: Env) -> Case:
    from monai_synth.data import dicom_folder_datalist

    root, p = _raw_csv(env, bytes(range(128, 256)) * 4)
    return Case(lambda: dicom_folder_datalist(root, p), ValueError, ("labels.csv", "not UTF-8"))


def _voc(env: Env, text: str) -> Path:
    p = env.tmp / "in" / "ann.xml"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def voc_billion_laughs(env: Env) -> Case:
    from monai_synth.data.annotations import read_voc_xml

    lol = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10 if i else "lol"}">' for i in range(9))
    p = _voc(env, f'<?xml version="1.0"?><!DOCTYPE annotation [{lol}]><annotation><name>&l8;</name></annotation>')
    return Case(lambda: read_voc_xml(p), ValueError, ("ann.xml", "entities"))


def voc_external_entity(env: Env) -> Case:
    from monai_synth.data.annotations import read_voc_xml

    secret = env.tmp / "in" / "secret.txt"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_text("PATIENT SECRET")
    p = _voc(env, f'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file://{secret}">]><annotation>&x;'
                  "</annotation>")  # fmt: skip
    return Case(lambda: read_voc_xml(p), ValueError, ("ann.xml", "entities"))


def voc_not_xml(env: Env) -> Case:
    from monai_synth.data.annotations import read_voc_xml

    p = _voc(env, "xmin,ymin\n1,2\n")
    return Case(lambda: read_voc_xml(p), ValueError, ("ann.xml", "not valid XML"))


def _datalist_with_labels(env: Env, train: list[int], val: list[int]) -> Path:
    from monai_synth.data.writers import write_png

    folder = env.tmp / "in"
    folder.mkdir(parents=True, exist_ok=True)
    entries: dict[str, list] = {"training": [], "validation": [], "test": []}
    for key, labels in (("training", train), ("validation", val), ("test", [0])):
        for k, lab in enumerate(labels):
            f = write_png(np.full((1, 8, 8), 0.1 * (k + 1), np.float32), folder / f"{key}_{k}.png")
            entries[key].append({"image": str(f), "label": lab})
    p = folder / "datalist.json"
    p.write_text(json.dumps(entries))
    return p


def datalist_label_gap(env: Env) -> Case:
    from monai_synth.data import load_labelled_splits

    p = _datalist_with_labels(env, [0, 2, 0, 2], [0])
    return Case(lambda: load_labelled_splits("datalist", p, image_size=8), ValueError, ("[0, 2]", "[1]", "Renumber"))


def datalist_labels_from_one(env: Env) -> Case:
    from monai_synth.data import load_labelled_splits

    p = _datalist_with_labels(env, [1, 2, 1, 2], [1])
    return Case(lambda: load_labelled_splits("datalist", p, image_size=8), ValueError, ("[1, 2]", "Renumber"))


def datalist_val_label_unknown(env: Env) -> Case:
    from monai_synth.data import load_labelled_splits

    p = _datalist_with_labels(env, [0, 1, 0, 1], [3])
    return Case(lambda: load_labelled_splits("datalist", p, image_size=8), ValueError, ("val", "[3]"))


def generate_class_name_escapes(env: Env) -> Case:
    return Case(_generate(env, class_names=["../../outside", "b"]), ValueError, ("class name", "../../outside"))


def near_copy_threshold_out_of_range(env: Env) -> Case:
    from monai_synth.engines import build_near_copy_filter

    images = np.random.default_rng(0).random((3, 1, 8, 8)).astype(np.float32)
    return Case(lambda: build_near_copy_filter(images, threshold=1.5), ValueError, ("threshold", "[-1, 1]"))


def near_copy_without_holdout(env: Env) -> Case:
    from monai_synth.engines import build_near_copy_filter

    images = np.random.default_rng(0).random((3, 1, 8, 8)).astype(np.float32)
    return Case(lambda: build_near_copy_filter(images), ValueError, ("holdout", "threshold"))


def near_copy_items_of_mixed_size(env: Env) -> Case:
    from monai_synth.engines import build_near_copy_filter

    items = [{"image": np.zeros((1, 8, 8), np.float32)}, {"image": np.zeros((1, 6, 6), np.float32)}]
    return Case(lambda: build_near_copy_filter(items, threshold=0.9), ValueError, ("references", "one size"))


def near_copy_splits_without_holdout(env: Env) -> Case:
    from monai_synth.engines import near_copy_filter_for_splits

    splits = {"train": [{"image": np.zeros((1, 8, 8), np.float32)}], "val": [], "test": []}
    return Case(lambda: near_copy_filter_for_splits(splits), ValueError, ("validation or test",))


def mlflow_plain_http_remote(env: Env) -> Case:
    from monai_synth.handlers import resolve_tracking_uri

    return Case(lambda: resolve_tracking_uri("http://mlflow.example.org:5000"), ValueError, ("http", "https"))


def audit_datalist_not_json(env: Env) -> Case:
    from monai_synth.privacy.audit import AuditInputError, audit_folders

    dl = env.tmp / "in" / "synthetic.json"
    dl.parent.mkdir(parents=True, exist_ok=True)
    dl.write_text("{'training': [")
    return Case(lambda: audit_folders(dl, dl, threshold=0.9), AuditInputError, ("synthetic.json", "datalist"))


def audit_truncated_png(env: Env) -> Case:
    from monai_synth.data.writers import write_png
    from monai_synth.privacy.audit import AuditInputError, audit_folders

    folder = env.tmp / "in" / "syn"
    folder.mkdir(parents=True)
    p = write_png(np.random.default_rng(0).random((1, 32, 32)).astype(np.float32), folder / "cut.png")
    p.write_bytes(p.read_bytes()[:60])
    return Case(lambda: audit_folders(folder, folder, threshold=0.9), AuditInputError, ("cut.png", "cannot read"))


def dicom_png_named_dcm(env: Env) -> Case:
    from monai_synth.data.writers import write_png

    folder = env.tmp / "in"
    folder.mkdir(parents=True)
    png = write_png(np.zeros((1, 8, 8), np.float32), folder / "x.png")
    p = png.rename(folder / "image.dcm")
    return Case(lambda: load_dicom(p), DicomReadError, ("image.dcm", "not a readable DICOM"))


CASES: dict[str, Callable[[Env], Case]] = {
    f.__name__: f
    for f in (
        dicom_truncated_half,
        dicom_truncated_in_header,
        dicom_not_dicom_named_dcm,
        dicom_empty_file,
        dicom_missing_pixeldata,
        dicom_j2k_without_decoder,
        dicom_folder_mixed_series,
        dicom_folder_mixed_slice_sizes,
        dicom_folder_duplicate_positions,
        dicom_folder_uneven_spacing,
        dicom_folder_mixed_pixel_spacing,
        dicom_folder_empty,
        dicom_path_missing,
        ct_without_rescale_into_scale_to_hu,
        nifti_with_nan,
        nifti_with_inf,
        metaimage_with_nan_sitk,
        image_wrong_rank_multiwindow,
        image_wrong_rank_edge_weight,
        image_zero_size_privacy_filter,
        image_wrong_rank_metrics,
        image_wrong_intensity_range,
        network_wrong_channel_count,
        demo_dicom_writer_3d,
        generate_unknown_format,
        generate_guidance_scale_nan,
        generate_wrong_channel_count,
        generate_into_unwritable_folder,
        label_csv_unknown_id,
        label_csv_missing_id,
        label_csv_missing_column,
        label_csv_duplicate_id,
        window_preset_unknown,
        multiwindow_preset_unknown,
        classifier_lr_negative,
        classifier_lr_nan,
        diffusion_trainer_lr_negative,
        guidance_scale_nan,
        ddim_steps_above_training_steps,
        real_fraction_above_one,
        real_fraction_negative,
        label_dropout_above_one,
        label_dropout_negative,
        class_label_out_of_range,
        unknown_scheduler_kind,
        unknown_loss,
        split_ratios_invalid,
        privacy_threshold_nan,
        output_dir_below_regular_file,
        output_dir_not_writable,
        checkpoint_save_into_unwritable,
        mlflow_unreachable_classifier,
        mlflow_unreachable_study,
        mlflow_file_store_uri,
        npz_object_arrays,
        npz_missing_keys,
        checkpoint_with_pickled_object,
        image_set_with_pickled_object,
        checkpoint_truncated,
        checkpoint_missing_optimizer,
        dicom_rescale_slope_zero,
        dicom_rescale_slope_nan,
        dicom_rescale_intercept_inf,
        dicom_bits_stored_above_allocated,
        dicom_bits_stored_zero,
        dicom_pixel_representation_invalid,
        dicom_high_bit_mismatch,
        dicom_decompression_bomb,
        dicom_bomb_through_load_image_2d,
        label_csv_latin1,
        label_csv_utf16,
        label_csv_empty_file,
        label_csv_short_row,
        label_csv_binary_garbage,
        voc_billion_laughs,
        voc_external_entity,
        voc_not_xml,
        datalist_label_gap,
        datalist_labels_from_one,
        datalist_val_label_unknown,
        generate_class_name_escapes,
        near_copy_threshold_out_of_range,
        near_copy_without_holdout,
        near_copy_items_of_mixed_size,
        near_copy_splits_without_holdout,
        mlflow_plain_http_remote,
        audit_datalist_not_json,
        audit_truncated_png,
        dicom_png_named_dcm,
    )
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, tmp_path, request, monkeypatch):
    env = Env(tmp_path, request, monkeypatch)
    case = CASES[name](env)
    before = snapshot(tmp_path)
    with pytest.raises(case.exc) as info:
        case.call()
    message = str(info.value)
    for word in case.words:
        assert word.lower() in message.lower(), f"{name}: {word!r} not in message {message!r}"
    created = snapshot(tmp_path) - before
    assert not created, f"{name}: partial outputs left behind: {sorted(created)}"


@pytest.mark.parametrize("value", [np.nan, np.inf], ids=["nan", "inf"])
def test_simpleitk_reads_non_finite_nifti_voxels_as_zero(value, tmp_path, request, monkeypatch):
    """Recorded hazard (ITK's NIfTI reader, not our code): NaN/Inf voxels of a NIfTI come back as 0 through
    SimpleITKReader, so no reader-level check can see them; MONAI's NibabelReader keeps them."""
    from monai.transforms import LoadImage

    p = _volume_with(Env(tmp_path, request, monkeypatch), value, "v.nii.gz")
    out = np.asarray(LoadImage(reader="SimpleITKReader", image_only=True)(p))
    assert np.isfinite(out).all() and out.max() == 0.0
    raw = np.asarray(LoadImage(reader="NibabelReader", image_only=True)(p))
    assert not np.isfinite(raw).all()


def test_table_has_at_least_80_cases():
    assert len(CASES) >= 80


def test_pickle_payload_never_runs(tmp_path, capsys):
    """The payload of ``checkpoint_with_pickled_object`` is refused, not executed."""
    from monai_synth.utils.io import safe_torch_load

    p = tmp_path / "evil.pt"
    torch.save(_Payload(), p)
    with pytest.raises(ValueError, match="evil.pt"):
        safe_torch_load(p)
    assert "pickle payload executed" not in capsys.readouterr().out


def test_unreachable_tracking_leaves_no_mlflow_store(tmp_path):
    """After the unreachable-URI refusal the output folder holds no MLflow database, state dict or figure (empty
    folders may remain: ``train_classifier`` creates its run folder before the check, see docs/reliability.md)."""
    case = mlflow_unreachable_classifier(Env(tmp_path, None, None))
    with pytest.raises(ConnectionError):
        case.call()
    assert json.dumps(sorted(snapshot(tmp_path))) == "[]"
    assert not list(tmp_path.rglob("mlruns*"))
