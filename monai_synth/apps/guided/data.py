"""Data of guided synthesis (seed 001): DICOM listing, CT slices and mammograms prepared for the model, demo data.

Krishna et al. (seed 001) train an unconditional DDPM on lung CT slices / mammograms and sample it with two low-pass
conditions. This module prepares the images (CT: HU, window, resize; mammograms: breast crop, chest wall left,
resize) with their PASCAL-VOC boxes. Arrays are rows first, ``(C, rows, cols)``, like the DICOM pixel data and the
boxes (``x`` = column, ``y`` = row); images are read by :func:`monai_synth.data.load_image_2d`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from monai.config import PathLike
from monai.data import Dataset

from monai_synth.data.annotations import BoundingBox, VOCAnnotation, load_voc_annotations, scale_box
from monai_synth.data.dicom import is_dicom_file
from monai_synth.data.image_io import load_image_2d, resize_images
from monai_synth.data.ranges import from_unit_range
from monai_synth.utils.io import atomic_path

__all__ = [
    "IMAGE_KINDS",
    "GuidedData",
    "anatomy_references",
    "PreparedImage",
    "breast_bounding_box",
    "image_dataset",
    "list_dicom_files",
    "load_ct_slice",
    "load_ct_volume",
    "load_mammogram",
    "load_prepared_images",
    "make_demo_guided_data",
    "resolve_guided_data",
    "with_boxes",
    "without_boxes",
]

logger = logging.getLogger(__name__)

IMAGE_KINDS = ("ct", "mg")


@dataclass
class PreparedImage:
    """One image ready for the model: ``image`` ``(1, size, size)`` in ``[-1, 1]``, boxes in its pixel grid.

    ``lesion_free`` is True only for images known to carry no lesion (:func:`resolve_guided_data`): the only
    anatomy references (:func:`anatomy_references`). ``label`` is the image's class for a classifier: 1 with a
    lesion (a box, or a known finding), 0 lesion-free, ``None`` unknown.
    """

    image: torch.Tensor
    boxes: list[BoundingBox] = field(default_factory=list)
    source: str = ""
    uid: str = ""
    lesion_free: bool = False
    label: int | None = None


@dataclass
class GuidedData:
    """Where the images and their PASCAL-VOC annotations are, and which files are known lesion-free (resolved
    paths; see :func:`resolve_guided_data`)."""

    files: list[Path]
    annotations: dict[str, VOCAnnotation]
    kind: str
    lesion_free: set[str] = field(default_factory=set)
    labels: dict[str, int] = field(default_factory=dict)


NIFTI_SUFFIXES = (".nii", ".nii.gz")


def _is_nifti(p: Path) -> bool:
    return p.name.lower().endswith(NIFTI_SUFFIXES)


def list_dicom_files(path: PathLike, nifti: bool = False) -> list[Path]:
    """Image files of ``path``: a file, or every DICOM file below a folder (sorted; ``*.dcm``, ``*.dicom`` and files
    of any name with the DICOM preamble), and with ``nifti`` every NIfTI volume (``*.nii``, ``*.nii.gz``). DICOM
    files marked ``BurnedInAnnotation YES`` (identifying text in the pixels) are left out
    (:func:`monai_synth.data.deid.exclude_burned_in` warns with the list).

    Raises:
        ValueError: when ``path`` does not exist or holds no usable file.
    """
    from monai_synth.data.deid import exclude_burned_in

    p = Path(path)
    if not p.exists():
        raise ValueError(f"DICOM path {str(p)!r} does not exist.")
    if p.is_file():
        files = [p]
    else:
        files = sorted(f for f in p.rglob("*") if (f.is_file() and nifti if _is_nifti(f) else is_dicom_file(f)))
    if not files:
        what = "DICOM file or NIfTI volume" if nifti else "DICOM file (*.dcm or with a DICOM header)"
        raise ValueError(f"folder {str(p)!r} holds no {what}.")
    volumes = [f for f in files if _is_nifti(f)]
    dicoms, excluded = exclude_burned_in([f for f in files if not _is_nifti(f)], "guidance references")
    if not dicoms and not volumes:
        raise ValueError(
            f"every DICOM file of {str(p)!r} is marked BurnedInAnnotation=YES ({len(excluded)}): their pixels carry "
            "identifying text, so none is used; remove the text (and the flag) first."
        )
    return sorted(dicoms + volumes)


def load_ct_volume(path: PathLike, size: int = 64, window: str = "lung", slice_step: int = 1) -> list[PreparedImage]:
    """Axial slices of a CT NIfTI volume in HU, shown radiologically (patient right on the image left, anterior up),
    windowed to ``[-1, 1]`` (``HUWindow``) and resized; every ``slice_step``-th slice, inferior to superior.

    The volume is reoriented to RAS with nibabel (``as_closest_canonical``); each slice ``(x, y)`` is then flipped
    on both axes and transposed, so rows run anterior -> posterior and columns right -> left, as a DICOM axial slice.

    Raises:
        ValueError: when the volume is not 3D or ``slice_step < 1``.
    """
    import nibabel as nib

    from monai_synth.transforms import HUWindow

    if slice_step < 1:
        raise ValueError(f"`slice_step` must be >= 1, got {slice_step}.")
    p = Path(path)
    img = nib.as_closest_canonical(nib.load(str(p)))
    vol = np.asarray(img.dataobj, dtype=np.float32)
    if vol.ndim == 4 and vol.shape[-1] == 1:
        vol = vol[..., 0]
    if vol.ndim != 3:
        raise ValueError(f"NIfTI {str(p)!r} must be a 3D CT volume, got shape {vol.shape}.")
    hu_window = HUWindow(window=window, output_range=(-1.0, 1.0))
    out = []
    for k in range(0, vol.shape[2], slice_step):
        axial = np.ascontiguousarray(vol[::-1, ::-1, k].T)  # RAS (x, y) -> rows A->P, columns R->L
        win = torch.as_tensor(hu_window(torch.from_numpy(axial)[None]), dtype=torch.float32)
        small = resize_images(win[None], size, value_range=(-1.0, 1.0))[0].clamp(-1.0, 1.0)
        out.append(PreparedImage(small, [], f"{p}#z={k}", ""))
    return out


def _sop_uid(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID)


def _boxes_for(path: Path, annotations: dict[str, VOCAnnotation]) -> tuple[str, list[BoundingBox], tuple[int, int]]:
    if not annotations:
        return "", [], (0, 0)
    uid = _sop_uid(path)
    ann = annotations.get(uid)
    if ann is None:
        return uid, [], (0, 0)
    return uid, list(ann.objects), (ann.height, ann.width)


def load_ct_slice(
    path: PathLike,
    size: int = 64,
    window: str = "lung",
    annotations: dict[str, VOCAnnotation] | None = None,
) -> PreparedImage:
    """Read one axial CT slice: stored values -> HU (``ScaleToHU``) -> ``HUWindow`` to ``[-1, 1]`` -> resize.

    Seed 001 (Fig. 2) shows lung CT in the lung, bone and soft-tissue windows.

    Args:
        path: a 2D CT DICOM file.
        size: output side length.
        window: ``HUWindow`` preset (``"lung"``, ``"bone"``, ``"soft_tissue"``, ...).
        annotations: PASCAL-VOC annotations keyed by SOPInstanceUID (:func:`load_voc_annotations`); the boxes of
            this slice are rescaled to ``size``.
    """
    p = Path(path)
    win = from_unit_range(load_image_2d(p, window=window))
    rows, cols = int(win.shape[-2]), int(win.shape[-1])
    uid, boxes, ann_size = _boxes_for(p, annotations or {})
    if boxes and ann_size[0] and ann_size != (rows, cols):
        logger.warning("annotation size %s differs from image size %s for %s", ann_size, (rows, cols), p)
    out = resize_images(win[None], size, value_range=(-1.0, 1.0))[0].clamp(-1.0, 1.0)
    return PreparedImage(out, [scale_box(b, (rows, cols), (size, size)) for b in boxes], str(p), uid)


def _otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    hist, edges = np.histogram(values, bins=bins)
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centers) / np.maximum(w0, 1)
    m1 = ((hist * centers).sum() - np.cumsum(hist * centers)) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(centers[int(np.argmax(between[:-1]))]) if len(between) > 1 else float(centers[0])


def breast_bounding_box(image: np.ndarray) -> tuple[int, int, int, int]:
    """Box ``(row0, row1, col0, col1)`` (exclusive ends) of the breast: Otsu threshold + largest component.

    Film labels and markers are separate, smaller bright components and are dropped.

    Args:
        image: 2D mammogram ``(rows, cols)``.

    Raises:
        ValueError: when ``image`` is not 2D or is constant.
    """
    from scipy import ndimage

    a = np.asarray(image, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"`image` must be 2D (rows, cols), got shape {a.shape}.")
    if float(a.max()) <= float(a.min()):
        raise ValueError("`image` is constant: no breast to find.")
    step = max(1, max(a.shape) // 512)  # threshold on a coarse copy: fast on 4k x 3k films
    small = a[::step, ::step]
    mask = small > _otsu_threshold(small)
    mask = ndimage.binary_opening(mask, iterations=2)
    labels, n = ndimage.label(mask)
    if n == 0:
        return 0, a.shape[0], 0, a.shape[1]
    largest = 1 + int(np.argmax(ndimage.sum(mask, labels, index=np.arange(1, n + 1))))
    rows, cols = np.nonzero(labels == largest)
    r0, r1 = int(rows.min()) * step, min(a.shape[0], (int(rows.max()) + 1) * step)
    c0, c1 = int(cols.min()) * step, min(a.shape[1], (int(cols.max()) + 1) * step)
    return r0, r1, c0, c1


def load_mammogram(
    path: PathLike,
    size: int = 64,
    annotations: dict[str, VOCAnnotation] | None = None,
    boxes: Mapping[str, Sequence[Sequence[int]]] | None = None,
    flip_to_left: bool = True,
) -> PreparedImage:
    """Preprocess a mammogram: breast crop (threshold + largest component), chest wall to the left, pad to a
    square, resize, intensities to ``[-1, 1]`` (0.5/99.5 percentiles inside the breast box).

    Args:
        path: a 2D MG DICOM file.
        size: output side length.
        annotations: PASCAL-VOC annotations keyed by SOPInstanceUID.
        boxes: pathology boxes by file name, ``{"1-282.dcm": [[xmin, ymin, xmax, ymax]]}`` in original pixels;
            used when no annotation matches (CBIS-DDSM ROIs, for instance, can be given this way).
        flip_to_left: mirror right breasts so that every chest wall is on the left.
    """
    p = Path(path)
    arr = load_image_2d(p, rescale=False)[0].numpy()
    uid, found, _ = _boxes_for(p, annotations or {})
    if not found and boxes and p.name in boxes:
        found = [BoundingBox("mass", *(int(v) for v in b)) for b in boxes[p.name]]
    r0, r1, c0, c1 = breast_bounding_box(arr)
    crop = arr[r0:r1, c0:c1]
    lo, hi = np.percentile(crop, [0.5, 99.5])
    crop = np.clip((crop - lo) / max(hi - lo, 1e-6), 0.0, 1.0) * 2.0 - 1.0
    h, w = crop.shape
    flip = flip_to_left and crop[:, w // 2 :].mean() > crop[:, : w // 2].mean()
    shifted = []
    for b in found:
        xmin, xmax = b.xmin - c0, b.xmax - c0
        if flip:
            xmin, xmax = w - 1 - xmax, w - 1 - xmin
        shifted.append(BoundingBox(b.label, xmin, b.ymin - r0, xmax, b.ymax - r0))
    if flip:
        crop = crop[:, ::-1]
    side = max(h, w)
    pad_r, pad_c = (side - h) // 2, 0  # chest wall stays at column 0
    square = np.full((side, side), -1.0, dtype=np.float32)
    square[pad_r : pad_r + h, pad_c : pad_c + w] = crop
    shifted = [BoundingBox(b.label, b.xmin + pad_c, b.ymin + pad_r, b.xmax + pad_c, b.ymax + pad_r) for b in shifted]
    out = resize_images(torch.from_numpy(square)[None, None], size, value_range=(-1.0, 1.0))[0].clamp(-1.0, 1.0)
    return PreparedImage(out, [scale_box(b, (side, side), (size, size)) for b in shifted], str(p), uid)


def load_prepared_images(
    data: GuidedData,
    size: int = 64,
    window: str = "lung",
    boxes: Mapping[str, Sequence[Sequence[int]]] | None = None,
) -> list[PreparedImage]:
    """Prepare every file of ``data``: :func:`load_ct_slice` (``kind="ct"``; a NIfTI volume gives all its axial
    slices, :func:`load_ct_volume`) or :func:`load_mammogram`. A volume's slices share its ``lesion_free`` and
    ``label``."""
    out = []
    for f in data.files:
        if data.kind == "ct" and _is_nifti(Path(f)):
            ims = load_ct_volume(f, size, window)
        elif data.kind == "ct":
            ims = [load_ct_slice(f, size, window, data.annotations)]
        else:
            ims = [load_mammogram(f, size, data.annotations, boxes)]
        key = str(Path(f).resolve())
        for im in ims:
            im.lesion_free = not im.boxes and key in data.lesion_free
            im.label = 1 if im.boxes else 0 if im.lesion_free else data.labels.get(key)
        out += ims
    return out


def image_dataset(images: Sequence[PreparedImage], image_key: str = "image") -> Dataset:
    """A MONAI ``Dataset`` of ``{image_key: (1, size, size)}`` items for the diffusion trainer."""
    if not images:
        raise ValueError("`images` is empty: no training image was found.")
    return Dataset(data=[{image_key: im.image} for im in images])


def with_boxes(images: Sequence[PreparedImage]) -> list[PreparedImage]:
    """The images that carry at least one pathology box (pathology references)."""
    return [im for im in images if im.boxes]


def without_boxes(images: Sequence[PreparedImage]) -> list[PreparedImage]:
    """The images without any box; all images when every one has a box. Not a lesion-free guarantee: an image
    without a box may carry an unannotated lesion (anatomy references come from :func:`anatomy_references`)."""
    out = [im for im in images if not im.boxes]
    return out or list(images)


def anatomy_references(images: Sequence[PreparedImage]) -> list[PreparedImage]:
    """The anatomy references of guided sampling: the images known to be lesion-free (``lesion_free``).

    An anatomy reference with an unannotated lesion would put that lesion outside the written box, so images
    without a box are not enough (seed 001 takes its anatomy references from screening images without cancer).

    Raises:
        ValueError: when no image is known to be lesion-free, saying how to declare them.
    """
    out = [im for im in images if im.lesion_free and not im.boxes]
    if not out:
        raise ValueError(
            f"none of the {len(images)} images is known to be lesion-free, so there is no anatomy reference: list "
            "the lesion-free files with `lesion_free` (file names or glob patterns relative to `data_path`), or, "
            "for a CT series whose every lesion is annotated, slices at least `lesion_free_margin_mm` from every "
            "annotated slice count as lesion-free."
        )
    return out


def _box_from_difference(normal: np.ndarray, finding: np.ndarray, label: str, threshold: float) -> BoundingBox:
    diff = np.abs(finding.astype(np.float64) - normal.astype(np.float64))
    rows, cols = np.nonzero(diff > threshold * diff.max())
    if rows.size == 0:
        raise ValueError("demo pair has no visible finding; try another seed.")
    return BoundingBox(label, int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max()))


def _write_voc_xml(path: Path, boxes: Sequence[BoundingBox], rows: int, cols: int) -> None:
    objs = "".join(
        f"<object><name>{b.label}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>"
        f"<bndbox><xmin>{b.xmin}</xmin><ymin>{b.ymin}</ymin><xmax>{b.xmax}</xmax><ymax>{b.ymax}</ymax></bndbox>"
        "</object>"
        for b in boxes
    )
    text = f"<annotation><size><width>{cols}</width><height>{rows}</height><depth>1</depth></size>{objs}</annotation>\n"
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def make_demo_guided_data(
    out_dir: PathLike, kind: str = "ct", n_per_class: int = 8, n_pathology: int = 2, size: int = 64, seed: int = 0
) -> tuple[Path, Path]:
    """Write built-in demo DICOMs in the layout of the shared Lung-PET-CT-Dx folder: ``dicom/`` + ``annotations/``.

    ``dicom/`` holds the demo training images (:func:`monai_synth.data.make_demo_dataset`) plus ``n_pathology``
    images with a finding (:func:`monai_synth.data.demo.make_demo_pair`); each of those gets a PASCAL-VOC XML
    named by its SOPInstanceUID, whose box is where the finding changed the image.

    Returns:
        ``(dicom_dir, annotation_dir)``.
    """
    from monai_synth.data.demo import make_demo_dataset, make_demo_pair, write_demo_dicom

    if kind not in IMAGE_KINDS:
        raise ValueError(f"`kind` must be one of {list(IMAGE_KINDS)}, got {kind!r}.")
    out = Path(out_dir)
    dicom_dir, ann_dir = out / "dicom", out / "annotations"
    if dicom_dir.is_dir() and ann_dir.is_dir() and any(ann_dir.glob("*.xml")):
        return dicom_dir, ann_dir  # already there
    make_demo_dataset(dicom_dir, kind=kind, n_per_class=n_per_class, size=size, seed=seed, deterministic_uids=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    label = "nodule" if kind == "ct" else "mass"
    for i in range(n_pathology):
        normal, finding = make_demo_pair(kind, size=size, seed=seed + 1000 + i)
        f = write_demo_dicom(dicom_dir / f"pathology_{i:02d}.dcm", finding, kind, index=10000 + i)
        box = _box_from_difference(normal, finding, label, threshold=0.15)
        _write_voc_xml(ann_dir / f"{_sop_uid(f)}.xml", [box], *finding.shape)
    return dicom_dir, ann_dir


def resolve_guided_data(
    kind: str,
    dicom_dir: PathLike | None = None,
    annotation_dir: PathLike | None = None,
    demo_dir: PathLike | None = None,
    size: int = 64,
    n_per_class: int = 8,
    seed: int = 0,
    lesion_free: Sequence[str] | None = None,
    lesion_free_margin_mm: float | None = 10.0,
) -> GuidedData:
    """Files + annotations to use: ``dicom_dir`` (and optional ``annotation_dir``) or, when ``dicom_dir`` is
    empty/``None``, built-in demo data written to ``demo_dir`` (:func:`make_demo_guided_data`).

    The files known to be lesion-free (the only anatomy references, :func:`anatomy_references`) are:

    - those matching ``lesion_free``: file names or glob patterns relative to ``dicom_dir``;
    - for the demo data, its normal class (label 0 of its ``datalist.json``);
    - for CT, with annotations and ``lesion_free_margin_mm`` set, the slices of an annotated series whose
      position (``ImagePositionPatient`` along the slice normal) is at least that far from every annotated slice
      of the series: this assumes the annotations cover every lesion of the series.

    Raises:
        ValueError: for an unknown ``kind``, when neither ``dicom_dir`` nor ``demo_dir`` is given, or when a
            ``lesion_free`` pattern matches no file.
    """
    if kind not in IMAGE_KINDS:
        raise ValueError(f"`kind` must be one of {list(IMAGE_KINDS)}, got {kind!r}.")
    known: set[str] = set()
    labels: dict[str, int] = {}
    if not dicom_dir:
        if not demo_dir:
            raise ValueError("give `dicom_dir` (real data) or `demo_dir` (where to write the built-in demo data).")
        dicom_dir, annotation_dir = make_demo_guided_data(demo_dir, kind, n_per_class=n_per_class, size=size, seed=seed)
        labels = _demo_labels(Path(dicom_dir))
        known |= {f for f, label in labels.items() if label == 0}
    annotations = load_voc_annotations(annotation_dir) if annotation_dir else {}
    files = list_dicom_files(dicom_dir, nifti=kind == "ct")
    root = Path(dicom_dir) if Path(dicom_dir).is_dir() else Path(dicom_dir).parent
    for pattern in lesion_free or []:
        hits = [f for f in files if f.match(str(pattern)) or f.relative_to(root).match(str(pattern))]
        if not hits:
            raise ValueError(f"`lesion_free` entry {str(pattern)!r} matches no DICOM file under {str(root)!r}.")
        known |= {str(f.resolve()) for f in hits}
    if kind == "ct" and annotations and lesion_free_margin_mm is not None:
        known |= _far_from_annotated_slices(files, annotations, float(lesion_free_margin_mm))
    return GuidedData(files=files, annotations=annotations, kind=kind, lesion_free=known, labels=labels)


def _demo_labels(dicom_dir: Path) -> dict[str, int]:
    """Resolved path -> label of the demo images (``datalist.json`` of :func:`make_demo_guided_data`)."""
    import json

    listing = dicom_dir / "datalist.json"
    if not listing.is_file():
        return {}
    data = json.loads(listing.read_text())
    items = [it for split in ("training", "validation", "test") for it in data.get(split, [])]
    return {str((dicom_dir / Path(it["image"]).name).resolve()): int(it["label"]) for it in items}


def _far_from_annotated_slices(
    files: Sequence[Path], annotations: Mapping[str, VOCAnnotation], margin: float
) -> set[str]:
    """CT slices at least ``margin`` mm (along the slice normal) from every annotated slice of their series."""
    import pydicom

    from monai_synth.data.dicom import slice_position

    tags = ["SOPInstanceUID", "SeriesInstanceUID", "ImagePositionPatient", "ImageOrientationPatient"]
    pos: dict[str, list[tuple[Path, float, bool]]] = {}
    for f in files:
        if _is_nifti(Path(f)):
            continue  # no per-slice annotation in a volume
        ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=tags)
        z = slice_position(ds)
        if z is None:
            continue  # no geometry: cannot be shown to be far from the lesion
        pos.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((f, z, str(ds.SOPInstanceUID) in annotations))
    out = set()
    for slices in pos.values():
        marked = [z for _, z, a in slices if a]
        if marked:
            out |= {str(f.resolve()) for f, z, a in slices if not a and min(abs(z - m) for m in marked) >= margin}
    return out
