"""Built-in offline demo data: procedural, labelled studies written as real DICOM files.

Three kinds, each with two classes (label 0 = normal, 1 = finding):

- ``"cxr"``: PA chest radiographs (Modality CR, MONOCHROME2, 12-bit uint16): body, dark lungs, heart, ribs;
  label 1 adds 1-3 soft opacities (consolidation-like Gaussian blobs) inside the lungs.
- ``"ct"``: axial chest CT slices stored as ``HU + 1024`` (RescaleSlope 1, RescaleIntercept -1024): fat, muscle,
  lungs near -850 HU with vessels, heart, aorta, spine; label 1 adds one solid nodule in a lung.
- ``"mg"``: cranio-caudal mammograms (Modality MG, 12-bit): breast outline from the chest wall, fibroglandular
  texture; label 1 adds a dense mass with an irregular margin.

This is demo data that exercises the real DICOM pipeline (readers, datalists, transforms); it is not clinical data
and says nothing about clinical performance. Pixels and labels are a deterministic function of ``seed``; UIDs are
fresh on every call unless ``deterministic_uids=True``.
"""

from __future__ import annotations

import datetime
import logging
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pydicom
from monai.config import PathLike
from scipy.ndimage import gaussian_filter

from monai_synth.data.datalists import split_datalist, write_datalist_json
from monai_synth.utils.io import atomic_path

__all__ = [
    "DEMO_KINDS",
    "CLASS_NAMES",
    "DemoImages",
    "make_demo_images",
    "make_demo_pair",
    "make_demo_dataset",
    "write_demo_dicom",
]

DEMO_KINDS = ("cxr", "ct", "mg")
CLASS_NAMES = {"cxr": ("normal", "opacity"), "ct": ("no_nodule", "nodule"), "mg": ("normal", "mass")}

logger = logging.getLogger(__name__)
_MODALITY = {"cxr": "CR", "ct": "CT", "mg": "MG"}
_SOP_CLASS = {
    "cxr": "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
    "ct": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "mg": "1.2.840.10008.5.1.4.1.1.1.2",  # Digital Mammography X-Ray Image Storage - For Presentation
}
_BITS = 12
_MAX = 2**_BITS - 1
# physical field of view in mm, to set the pixel spacing for any `size`
_FOV_MM = {"cxr": 400.0, "ct": 350.0, "mg": 240.0}


class DemoImages(NamedTuple):
    """Stored pixel values ``(N, H, W)`` uint16 and labels ``(N,)`` int64."""

    images: np.ndarray
    labels: np.ndarray


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(size, dtype=np.float64) + 0.5) / size * 2.0 - 1.0
    return np.meshgrid(c, c, indexing="ij")  # y (down), x (right), both in [-1, 1]


def _ellipse(y, x, cy, cx, ay, ax, size: int, angle: float = 0.0) -> np.ndarray:
    """Soft-edged ellipse mask in [0, 1] (edge width about one pixel)."""
    ca, sa = np.cos(angle), np.sin(angle)
    dy, dx = y - cy, x - cx
    u, v = (dx * ca + dy * sa) / ax, (-dx * sa + dy * ca) / ay
    r = np.sqrt(u**2 + v**2)
    return 1.0 / (1.0 + np.exp((r - 1.0) * min(ax, ay) * size / 1.0))


def _blob(y, x, cy, cx, radius) -> np.ndarray:
    return np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2.0 * radius**2))


def _smooth_noise(rng: np.random.Generator, size: int, sigma_frac: float) -> np.ndarray:
    field = gaussian_filter(rng.standard_normal((size, size)), sigma=max(sigma_frac * size, 0.5), mode="reflect")
    return field / (field.std() + 1e-8)


def _point_in(mask: np.ndarray, rng: np.random.Generator, y, x, threshold: float = 0.9) -> tuple[float, float]:
    idx = np.flatnonzero(mask.ravel() > min(threshold, 0.99 * float(mask.max())))  # tiny images: best pixels
    k = idx[rng.integers(len(idx))]
    return float(y.ravel()[k]), float(x.ravel()[k])


def _cxr(rng: np.random.Generator, lesion_rng: np.random.Generator, size: int, label: int) -> np.ndarray:
    y, x = _grid(size)
    # thorax: wide ellipse running off the bottom of the image, plus shoulders
    body = _ellipse(y, x, 0.35, rng.uniform(-0.03, 0.03), rng.uniform(1.15, 1.3), rng.uniform(0.86, 0.96), size)
    body = np.maximum(body, _ellipse(y, x, -0.62, 0.0, 0.3, rng.uniform(0.95, 1.05), size))
    lx, ly = rng.uniform(0.34, 0.42), rng.uniform(-0.12, -0.02)
    lay, lax = rng.uniform(0.55, 0.66), rng.uniform(0.25, 0.31)
    right = _ellipse(y, x, ly, -lx, lay, lax, size, angle=rng.uniform(-0.15, 0.0))
    left = _ellipse(y, x, ly + 0.03, lx, lay * 0.95, lax, size, angle=rng.uniform(0.0, 0.15))
    lungs = np.maximum(right, left)
    heart = _ellipse(y, x, rng.uniform(0.25, 0.35), rng.uniform(0.08, 0.16), 0.26, rng.uniform(0.22, 0.3), size)
    img = 0.06 + 0.5 * body - 0.32 * lungs + 0.22 * heart * lungs
    img += 0.12 * np.exp(-(x**2) / (2 * 0.07**2)) * body  # mediastinum / spine
    # ribs: curved bands over the lungs, on both sides
    for k in range(9):
        y0 = -0.72 + 0.17 * k + rng.uniform(-0.02, 0.02)
        curve = y0 + 0.3 * np.abs(x) - 0.25 * (np.abs(x) - 0.35) ** 2
        img += 0.045 * np.exp(-((y - curve) ** 2) / (2 * 0.02**2)) * lungs
    img += 0.03 * _smooth_noise(rng, size, 0.06) * body
    if label == 1:
        for _ in range(lesion_rng.integers(1, 4)):
            cy, cx = _point_in(lungs, lesion_rng, y, x)
            img += lesion_rng.uniform(0.1, 0.22) * _blob(y, x, cy, cx, lesion_rng.uniform(0.06, 0.14)) * lungs
    img = rng.uniform(0.85, 1.15) * img + rng.uniform(-0.04, 0.04)
    img += 0.015 * rng.standard_normal(img.shape)
    return np.clip(np.round(img * _MAX), 0, _MAX).astype(np.uint16)


def _ct(rng: np.random.Generator, lesion_rng: np.random.Generator, size: int, label: int) -> np.ndarray:
    y, x = _grid(size)
    hu = np.full((size, size), -1000.0)
    ay, ax = rng.uniform(0.6, 0.7), rng.uniform(0.85, 0.93)
    body = _ellipse(y, x, 0.0, 0.0, ay, ax, size)
    muscle = _ellipse(y, x, 0.0, 0.0, ay - 0.07, ax - 0.07, size)
    hu = hu * (1 - body) + (-100.0) * body  # subcutaneous fat
    hu = hu * (1 - muscle) + 40.0 * muscle
    lx, lay, lax = rng.uniform(0.36, 0.42), rng.uniform(0.4, 0.48), rng.uniform(0.26, 0.31)
    lungs = np.maximum(
        _ellipse(y, x, -0.04, -lx, lay, lax, size, angle=0.1), _ellipse(y, x, -0.04, lx, lay, lax, size, angle=-0.1)
    )
    heart = _ellipse(y, x, rng.uniform(0.02, 0.12), rng.uniform(0.05, 0.12), 0.24, rng.uniform(0.2, 0.26), size)
    lungs = lungs * (1 - heart)
    parenchyma = -850.0 + 30.0 * _smooth_noise(rng, size, 0.05)
    hu = hu * (1 - lungs) + parenchyma * lungs
    hu = hu * (1 - heart) + 45.0 * heart
    aorta = _ellipse(y, x, 0.28, -0.1, 0.07, 0.07, size)
    spine = _ellipse(y, x, 0.48, 0.0, 0.1, 0.1, size)
    hu = hu * (1 - aorta) + 50.0 * aorta
    hu = hu * (1 - spine) + 600.0 * spine
    for _ in range(rng.integers(6, 14)):  # vessels, in both classes
        cy, cx = _point_in(lungs, rng, y, x)
        hu += rng.uniform(300.0, 700.0) * _blob(y, x, cy, cx, rng.uniform(0.012, 0.028)) * lungs
    if label == 1:
        cy, cx = _point_in(lungs, lesion_rng, y, x, threshold=0.97)
        r = lesion_rng.uniform(0.035, 0.075)
        nodule = 1.0 / (1.0 + np.exp((np.sqrt((y - cy) ** 2 + (x - cx) ** 2) / r - 1.0) * 6.0))
        hu = hu * (1 - nodule * lungs) + lesion_rng.uniform(-20.0, 60.0) * nodule * lungs
    hu += 20.0 * rng.standard_normal(hu.shape)
    return np.clip(np.round(hu + 1024.0), 0, _MAX).astype(np.uint16)


def _mg(rng: np.random.Generator, lesion_rng: np.random.Generator, size: int, label: int) -> np.ndarray:
    y, x = _grid(size)
    ay, ax = rng.uniform(0.72, 0.92), rng.uniform(1.25, 1.6)
    cy = rng.uniform(-0.08, 0.08)
    breast = _ellipse(y, x, cy, -1.0, ay, ax, size) * (x > -1.0)
    # fibroglandular tissue: smooth texture, denser near the chest wall
    dense = np.clip(_smooth_noise(rng, size, 0.06) * 0.45 + 0.3 + 0.4 * (-x), 0.0, None)
    dense = dense * np.exp(-(((x + 1.0) / ax) ** 2 + ((y - cy) / ay) ** 2) * 1.5)
    img = 0.03 + breast * (0.32 + rng.uniform(0.1, 0.18) * dense)
    img += 0.04 * (breast - _ellipse(y, x, cy, -1.0, ay - 0.04, ax - 0.04, size) * (x > -1.0)).clip(0, 1)  # skin
    if label == 1:
        inner = _ellipse(y, x, cy, -1.0, ay * 0.75, ax * 0.8, size) * (x > -0.9)
        my, mx = _point_in(inner, lesion_rng, y, x)
        r = lesion_rng.uniform(0.1, 0.16)
        theta = np.arctan2(y - my, x - mx)
        radius = r * (1.0 + 0.18 * np.sin(3 * theta + lesion_rng.uniform(0, 6.28)) + 0.1 * np.sin(5 * theta))
        dist = np.sqrt((y - my) ** 2 + (x - mx) ** 2)
        mass = 1.0 / (1.0 + np.exp((dist / radius - 1.0) * 5.0))
        img += lesion_rng.uniform(0.22, 0.34) * mass * breast
    img = rng.uniform(0.9, 1.1) * img + 0.012 * rng.standard_normal(img.shape) * (0.3 + breast)
    if rng.random() < 0.5:  # right breast: chest wall on the other side
        img = img[:, ::-1]
    return np.clip(np.round(img * _MAX), 0, _MAX).astype(np.uint16)


_GENERATORS = {"cxr": _cxr, "ct": _ct, "mg": _mg}


def _check_kind(kind: str) -> None:
    if kind not in DEMO_KINDS:
        raise ValueError(f"`kind` must be one of {list(DEMO_KINDS)}, got {kind!r}.")


def make_demo_images(kind: str = "cxr", n_per_class: int = 50, size: int = 64, seed: int = 0) -> DemoImages:
    """Generate the stored pixel values and labels of a demo set (no files written).

    Samples are interleaved in a seeded random order; each sample draws its anatomy and its lesion from two
    separate children of ``np.random.SeedSequence(seed)``, so the same seed gives identical images, and
    :func:`make_demo_pair` can render the same anatomy with and without the finding.

    Args:
        kind: ``"cxr"``, ``"ct"`` or ``"mg"``.
        n_per_class: images per class (two classes).
        size: image height and width in pixels (>= 16).
        seed: random seed.

    Returns:
        stored values uint16 ``(2 * n_per_class, size, size)`` (for ``"ct"``: HU + 1024) and labels int64.
    """
    _check_kind(kind)
    if n_per_class < 1:
        raise ValueError(f"`n_per_class` must be >= 1, got {n_per_class}.")
    if size < 16:
        raise ValueError(f"`size` must be >= 16 pixels, got {size}.")
    seq = np.random.SeedSequence(seed)
    order_seq, *sample_seqs = seq.spawn(1 + 2 * n_per_class)
    labels = np.repeat(np.array([0, 1], dtype=np.int64), n_per_class)
    labels = labels[np.random.default_rng(order_seq).permutation(len(labels))]
    images = np.stack([_render(kind, s, size, int(lab)) for s, lab in zip(sample_seqs, labels)])
    return DemoImages(images, labels)


def _render(kind: str, seq: np.random.SeedSequence, size: int, label: int) -> np.ndarray:
    anatomy, lesion = seq.spawn(2)
    return _GENERATORS[kind](np.random.default_rng(anatomy), np.random.default_rng(lesion), size, label)


def make_demo_pair(kind: str = "cxr", size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The same demo anatomy rendered without (label 0) and with (label 1) the finding.

    Args:
        kind: ``"cxr"``, ``"ct"`` or ``"mg"``.
        size: image size in pixels.
        seed: random seed.

    Returns:
        stored values (uint16) of the normal and the abnormal image; they differ only where the finding is.
    """
    _check_kind(kind)
    # spawn() advances a SeedSequence, so each rendering gets its own fresh copy of the same seed
    return _render(kind, np.random.SeedSequence(seed), size, 0), _render(kind, np.random.SeedSequence(seed), size, 1)


def write_demo_dicom(
    path: PathLike,
    pixels: np.ndarray,
    kind: str,
    index: int = 0,
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
) -> Path:
    """Write one demo image as an Explicit VR Little Endian DICOM file with the modality's tags.

    Args:
        path: destination ``.dcm``.
        pixels: 2D uint16 stored values (12 bits used).
        kind: ``"cxr"``, ``"ct"`` or ``"mg"``.
        index: sample number, used for PatientID / InstanceNumber.
        study_uid: StudyInstanceUID (fresh if None); likewise ``series_uid`` and ``sop_uid``.

    Returns:
        the path written.
    """
    _check_kind(kind)
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

    pixels = np.ascontiguousarray(pixels, dtype=np.uint16)
    if pixels.ndim != 2:
        raise ValueError(f"`pixels` must be 2D, got shape {pixels.shape}.")
    rows, cols = pixels.shape
    sop_uid = sop_uid or generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = _SOP_CLASS[kind]
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = _SOP_CLASS[kind]
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.PatientName = "DEMO^SYNTHETIC"
    ds.PatientID = f"DEMO{index:05d}"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyDate = ds.SeriesDate = datetime.date(2000, 1, 1).strftime("%Y%m%d")
    ds.StudyID = "DEMO"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.Manufacturer = "monai_synth demo generator"
    ds.SeriesDescription = f"monai_synth synthetic demo ({kind}), not clinical data"
    ds.Modality = _MODALITY[kind]
    ds.SeriesNumber = 1
    ds.InstanceNumber = index + 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, _BITS, _BITS - 1
    ds.PixelRepresentation = 0
    spacing = _FOV_MM[kind] / max(rows, cols)
    if kind == "ct":
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.BodyPartExamined = "CHEST"
        ds.PixelSpacing = [spacing, spacing]
        ds.SliceThickness = 5.0
        ds.ImagePositionPatient = [-spacing * cols / 2, -spacing * rows / 2, 0.0]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, -1024, "HU"
        ds.WindowCenter, ds.WindowWidth = -600, 1500
    else:
        ds.ImageType = ["DERIVED", "PRIMARY"]
        ds.ImagerPixelSpacing = [spacing, spacing]
        ds.PixelSpacing = [spacing, spacing]
        ds.WindowCenter, ds.WindowWidth = _MAX // 2, _MAX
        if kind == "cxr":
            ds.BodyPartExamined, ds.ViewPosition = "CHEST", "PA"
        else:
            ds.BodyPartExamined, ds.ViewPosition = "BREAST", "CC"
            ds.ImageLaterality = "L" if pixels[:, : cols // 2].mean() > pixels[:, cols // 2 :].mean() else "R"
    ds.PixelData = pixels.tobytes()
    path = Path(path)
    with atomic_path(path) as tmp:  # a killed run never leaves a half-written .dcm
        ds.save_as(tmp, enforce_file_format=True)
    return path


def make_demo_dataset(
    out_dir: PathLike,
    kind: str = "cxr",
    n_per_class: int = 100,
    size: int = 64,
    seed: int = 0,
    ratios: tuple[float, float, float] = (0.7, 0.15, 0.15),
    deterministic_uids: bool = False,
) -> dict[str, list[dict]]:
    """Write a labelled demo set as one DICOM file per sample plus ``datalist.json``, and return the datalist.

    Layout: ``out_dir/<kind>_<NNNN>.dcm`` and ``out_dir/datalist.json`` in the Decathlon format
    (``{"training": [...], "validation": [...], "test": [...]}``, paths relative to ``out_dir``, plus ``labels``,
    ``modality`` and ``seed``). Splits are stratified by label (``partition_dataset_classes``, seeded).

    Args:
        out_dir: output folder (created).
        kind: ``"cxr"``, ``"ct"`` or ``"mg"``.
        n_per_class: images per class.
        size: image size in pixels.
        seed: seed for pixels, labels and splits.
        ratios: training / validation / test proportions.
        deterministic_uids: derive UIDs from ``(kind, seed, index)`` instead of fresh random UIDs.

    Returns:
        ``{"training": [...], "validation": [...], "test": [...]}`` with items
        ``{"image": absolute path, "label": int, "id": str}``.
    """
    from pydicom.uid import generate_uid

    out_dir = Path(out_dir)
    demo = make_demo_images(kind, n_per_class, size, seed)

    def uid(tag: str) -> str:
        return generate_uid(entropy_srcs=[f"monai_synth-demo-{kind}-{seed}-{tag}"]) if deterministic_uids else None

    items = []
    for i, (pixels, label) in enumerate(zip(demo.images, demo.labels)):
        sample_id = f"{kind}_{i:04d}"
        path = write_demo_dicom(
            out_dir / f"{sample_id}.dcm",
            pixels,
            kind,
            index=i,
            study_uid=uid(f"study{i}"),
            series_uid=uid(f"series{i}"),
            sop_uid=uid(f"sop{i}"),
        )
        items.append({"image": str(path.resolve()), "label": int(label), "id": sample_id})
    splits = split_datalist(items, ratios=ratios, seed=seed, stratify=True)
    write_datalist_json(
        splits,
        out_dir / "datalist.json",
        name=f"monai_synth demo {kind}",
        description="Procedural demo data for pipeline tests; not clinical data.",
        modality=_MODALITY[kind],
        labels={str(i): n for i, n in enumerate(CLASS_NAMES[kind])},
        seed=seed,
    )
    logger.info("wrote %d %s demo images to %s", len(items), kind, out_dir)
    return splits
