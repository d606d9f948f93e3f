"""Glue for multi-condition guided synthesis of lung CT and mammograms with pathologies (seed 001).

Krishna et al., "Synthesis of Realistic Medical Images with Pathologies Using Diffusion Models with Application to
Lung CT and Mammography" (seed 001): an unconditional DDPM is trained on slices / mammograms, then sampled with two
low-pass conditions (section 2.1, Eq. 4): an *anatomy* reference for the whole image and a *pathology* reference
inside a patch, weighted by ``W`` (Eq. 5).  This module prepares the images (CT: HU, window, resize; mammograms:
breast crop, resize), cuts and prepares the pathology patches (section 2.2, Fig. 1b), builds batches of reference
pairs, runs :func:`monai_synth.inferers.sampling.sample` with
:func:`monai_synth.inferers.guidance.anatomy_pathology_guidance`, and writes PNG images with a JSON annotation
(box, mask) next to each.

Image arrays here are row-major ``(C, rows, cols)`` like the DICOM pixel data and the PASCAL-VOC boxes
(``x`` = column, ``y`` = row).  MONAI's DICOM readers return ``(C, x, y)``; :func:`load_ct_slice` and
:func:`load_mammogram` transpose back.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import PathLike
from monai.data import Dataset

from monai_synth.data.annotations import BoundingBox, VOCAnnotation, load_voc_annotations, scale_box
from monai_synth.inferers.guidance import anatomy_pathology_guidance
from monai_synth.inferers.sampling import sample
from monai_synth.utils.io import atomic_path

__all__ = [
    "GuidedData",
    "PreparedImage",
    "ReferencePairs",
    "breast_bounding_box",
    "build_reference_pairs",
    "cut_patch",
    "guided_sample_pairs",
    "image_dataset",
    "list_dicom_files",
    "load_trained_network",
    "mammo_patch_transform",
    "load_ct_slice",
    "load_mammogram",
    "load_prepared_images",
    "make_demo_guided_data",
    "prepare_mammo_patch",
    "resolve_guided_data",
    "run_guided_sampling",
    "save_montage",
    "with_boxes",
    "without_boxes",
    "write_annotated_samples",
]

logger = logging.getLogger(__name__)

IMAGE_KINDS = ("ct", "mg")


# ------------------------------------------------------------------------------------------------ data types


@dataclass
class PreparedImage:
    """One image ready for the model: ``image`` ``(1, size, size)`` in ``[-1, 1]``, boxes in its pixel grid."""

    image: torch.Tensor
    boxes: list[BoundingBox] = field(default_factory=list)
    source: str = ""
    uid: str = ""


@dataclass
class GuidedData:
    """Where the images and their PASCAL-VOC annotations are (see :func:`resolve_guided_data`)."""

    files: list[Path]
    annotations: dict[str, VOCAnnotation]
    kind: str


@dataclass
class ReferencePairs:
    """A batch of sampling conditions (seed 001, Eq. 4-5), all ``(N, 1, size, size)``.

    ``anatomy`` (``y_1``), ``pathology`` (``y_2``: the anatomy with the prepared patch pasted in its box),
    ``weight`` (``W``: Gaussian inside the box, 0 outside), the box of each sample and provenance strings.
    """

    anatomy: torch.Tensor
    pathology: torch.Tensor
    weight: torch.Tensor
    boxes: list[BoundingBox]
    anatomy_sources: list[str]
    pathology_sources: list[str]


# -------------------------------------------------------------------------------------------------- reading


def list_dicom_files(path: PathLike) -> list[Path]:
    """DICOM files of ``path``: a file, or every ``*.dcm`` below a folder (sorted).

    Raises:
        ValueError: when ``path`` does not exist or holds no ``.dcm`` file.
    """
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise ValueError(f"DICOM path {str(p)!r} does not exist.")
    files = sorted(f for f in p.rglob("*.dcm") if f.is_file())
    if not files:
        raise ValueError(f"DICOM folder {str(p)!r} holds no *.dcm file.")
    return files


def _sop_uid(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID)


def _load_rows_cols(path: Path, rescale: bool = False):
    """Load a 2D DICOM as ``(1, rows, cols)`` float32 (MONAI gives ``(1, x, y)``), keeping the MetaTensor meta."""
    from monai_synth.data import load_dicom

    img = load_dicom(path, rescale=rescale, ensure_channel_first=True)
    if img.ndim == 4 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim != 3:
        raise ValueError(f"DICOM file {str(path)!r} is not a 2D image (shape {tuple(img.shape)}).")
    return img.transpose(-1, -2)


def _boxes_for(path: Path, annotations: dict[str, VOCAnnotation]) -> tuple[str, list[BoundingBox], tuple[int, int]]:
    if not annotations:
        return "", [], (0, 0)
    uid = _sop_uid(path)
    ann = annotations.get(uid)
    if ann is None:
        return uid, [], (0, 0)
    return uid, list(ann.objects), (ann.height, ann.width)


def _resize(img: torch.Tensor, size: int) -> torch.Tensor:
    """Anti-aliased resize of ``(C, H, W)`` to ``(C, size, size)`` (torch's anti-aliased bilinear, which is fast
    on 4k films, unlike a Gaussian pre-filter)."""
    x = torch.as_tensor(img, dtype=torch.float32)
    if tuple(x.shape[-2:]) == (size, size):
        return x.clone()
    return torch.nn.functional.interpolate(
        x[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )[0]


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
    from monai_synth.transforms import HUWindow, ScaleToHU

    p = Path(path)
    img = _load_rows_cols(p)
    hu = ScaleToHU()(img)
    win = HUWindow(window=window, output_range=(-1.0, 1.0))(hu)
    rows, cols = int(win.shape[-2]), int(win.shape[-1])
    uid, boxes, ann_size = _boxes_for(p, annotations or {})
    if boxes and ann_size[0] and ann_size != (rows, cols):
        logger.warning("annotation size %s differs from image size %s for %s", ann_size, (rows, cols), p)
    out = _resize(torch.as_tensor(win), size).clamp(-1.0, 1.0)
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
    img = _load_rows_cols(p)
    arr = np.asarray(img[0], dtype=np.float32)
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
    out = _resize(torch.from_numpy(square)[None], size).clamp(-1.0, 1.0)
    return PreparedImage(out, [scale_box(b, (side, side), (size, size)) for b in shifted], str(p), uid)


def load_prepared_images(
    data: GuidedData,
    size: int = 64,
    window: str = "lung",
    boxes: Mapping[str, Sequence[Sequence[int]]] | None = None,
) -> list[PreparedImage]:
    """Prepare every file of ``data`` with :func:`load_ct_slice` (``kind="ct"``) or :func:`load_mammogram`."""
    if data.kind == "ct":
        return [load_ct_slice(f, size, window, data.annotations) for f in data.files]
    return [load_mammogram(f, size, data.annotations, boxes) for f in data.files]


def image_dataset(images: Sequence[PreparedImage], image_key: str = "image") -> Dataset:
    """A MONAI ``Dataset`` of ``{image_key: (1, size, size)}`` items for the diffusion trainer."""
    if not images:
        raise ValueError("`images` is empty: no training image was found.")
    return Dataset(data=[{image_key: im.image} for im in images])


# ---------------------------------------------------------------------------------------------- demo data


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
    text = (
        f"<annotation><size><width>{cols}</width><height>{rows}</height><depth>1</depth></size>{objs}</annotation>\n"
    )
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
) -> GuidedData:
    """Files + annotations to use: ``dicom_dir`` (and optional ``annotation_dir``) or, when ``dicom_dir`` is
    empty/``None``, built-in demo data written to ``demo_dir`` (:func:`make_demo_guided_data`).

    Raises:
        ValueError: for an unknown ``kind``, or when neither ``dicom_dir`` nor ``demo_dir`` is given.
    """
    if kind not in IMAGE_KINDS:
        raise ValueError(f"`kind` must be one of {list(IMAGE_KINDS)}, got {kind!r}.")
    if not dicom_dir:
        if not demo_dir:
            raise ValueError("give `dicom_dir` (real data) or `demo_dir` (where to write the built-in demo data).")
        dicom_dir, annotation_dir = make_demo_guided_data(demo_dir, kind, n_per_class=n_per_class, size=size, seed=seed)
    annotations = load_voc_annotations(annotation_dir) if annotation_dir else {}
    files = [f for f in list_dicom_files(dicom_dir)]
    return GuidedData(files=files, annotations=annotations, kind=kind)


# --------------------------------------------------------------------------------------------- conditions


def cut_patch(image: PreparedImage, box: BoundingBox, margin: float = 0.25) -> tuple[torch.Tensor, BoundingBox]:
    """Cut the pathology patch: ``box`` grown by ``margin`` (fraction of its size) on each side, clipped.

    Returns:
        ``(patch (1, h, w), the box actually cut)``.
    """
    rows, cols = image.image.shape[-2:]
    dy, dx = int(round(box.height * margin)), int(round(box.width * margin))
    cut = BoundingBox(
        box.label,
        max(0, box.xmin - dx),
        max(0, box.ymin - dy),
        min(cols - 1, box.xmax + dx),
        min(rows - 1, box.ymax + dy),
    )
    return image.image[:, cut.ymin : cut.ymax + 1, cut.xmin : cut.xmax + 1].clone(), cut


def prepare_mammo_patch(
    patch: torch.Tensor,
    reference: torch.Tensor,
    q_range: Sequence[float] = (0.975, 0.995),
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    seed: int | None = None,
) -> torch.Tensor:
    """Seed 001, section 2.2 / Fig. 1b: histogram equalization, normalization to the reference's
    ``[min, quantile_q]`` with ``q ~ U(q_range)``, then optional random rotation/translation/flip (section 3).
    Works in ``[0, 1]``; input and output are in ``[-1, 1]``.

    The third step of Fig. 1b, Gaussian weighting towards the patch edges, is applied when the patch is pasted
    (:func:`build_reference_pairs` with ``edge_blend=True``): there the weighting fades the patch into the
    anatomy reference, which removes the step at the patch border without darkening it.

    Args:
        patch: ``(1, h, w)`` in ``[-1, 1]``.
        reference: anatomy reference ``(1, H, W)`` in ``[-1, 1]``.
        q_range: quantile range of ``RandQuantileNormalizeToReference``.
        augment: e.g. ``RandPatchAugment`` (applied to the ``(1, h, w)`` patch).
        seed: seed of the quantile draw.
    """
    from monai_synth.transforms import HistogramEqualize, RandQuantileNormalizeToReference

    p01 = (torch.as_tensor(patch, dtype=torch.float32) + 1.0) / 2.0
    ref01 = (torch.as_tensor(reference, dtype=torch.float32) + 1.0) / 2.0
    eq = torch.as_tensor(HistogramEqualize(output_range=(0.0, 1.0))(p01.numpy()))
    norm = RandQuantileNormalizeToReference(q_range=q_range)
    if seed is not None:
        norm.set_random_state(seed)
    p = torch.as_tensor(norm(eq.numpy(), reference=ref01.numpy()), dtype=torch.float32)
    if augment is not None:
        p = torch.as_tensor(augment(p), dtype=torch.float32)
    return (p * 2.0 - 1.0).clamp(-1.0, 1.0)


def mammo_patch_transform(
    q_range: Sequence[float] = (0.975, 0.995),
    augment: bool = True,
    rotation: str = "right_angle",
    translate_range: float = 0.0,
    flip_prob: float = 0.5,
) -> Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]:
    """A ``patch_transform`` for :func:`build_reference_pairs`: :func:`prepare_mammo_patch` with a
    ``RandPatchAugment`` (rotation / translation / flips, seed 001 section 3) seeded per sample."""
    from monai_synth.transforms import RandPatchAugment

    def _transform(patch: torch.Tensor, reference: torch.Tensor, seed: int) -> torch.Tensor:
        aug = None
        if augment:
            aug = RandPatchAugment(
                spatial_dims=2, rotation=rotation, translate_range=translate_range, flip_prob=flip_prob
            ).set_random_state(seed)
        return prepare_mammo_patch(patch, reference, q_range, aug, seed)

    return _transform


def _placed_lesion_box(
    box: BoundingBox, cut: BoundingBox, patch_shape: tuple[int, int], center: tuple[int, int], image: tuple[int, int]
) -> BoundingBox:
    """The lesion box (not the margin) after its patch was pasted with its centre at ``center``.

    Without a shape change the lesion keeps its offset inside the cut patch. When a transform swapped the patch
    sides (90-degree rotation) the lesion box is taken centred in the patch with swapped sides, which is exact for
    right-angle rotations and flips of a patch with equal margins.
    """
    ph, pw = patch_shape
    top, left = center[0] - ph // 2, center[1] - pw // 2
    if (ph, pw) == (cut.height, cut.width):
        y0, x0 = top + box.ymin - cut.ymin, left + box.xmin - cut.xmin
        h, w = box.height, box.width
    else:
        h, w = (box.width, box.height) if (ph, pw) == (cut.width, cut.height) else (box.height, box.width)
        y0, x0 = top + (ph - h) // 2, left + (pw - w) // 2
    rows, cols = image
    return BoundingBox(
        box.label,
        int(np.clip(x0, 0, cols - 1)),
        int(np.clip(y0, 0, rows - 1)),
        int(np.clip(x0 + w - 1, 0, cols - 1)),
        int(np.clip(y0 + h - 1, 0, rows - 1)),
    )


def build_reference_pairs(
    anatomy_images: Sequence[PreparedImage],
    pathology_images: Sequence[PreparedImage],
    num_samples: int,
    patch_transform: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor] | None = None,
    margin: float = 0.25,
    sigma_factor: float = 0.2,
    max_shift: int = 0,
    seed: int = 0,
    edge_blend: bool = True,
) -> ReferencePairs:
    """Pair anatomy references with pathology patches (seed 001, sections 2.1-2.2), cycling through both lists.

    Sample ``i`` uses anatomy ``i % A`` and the first box of pathology image ``i % P``; the patch (box grown by
    ``margin``) is optionally transformed (``patch_transform(patch, anatomy, seed_i)``, e.g.
    :func:`prepare_mammo_patch`), pasted into a copy of the anatomy at the box position (shifted by up to
    ``max_shift`` pixels) with ``place_patch``, and ``W`` is its Gaussian patch weight map (Eq. 5).
    With ``edge_blend`` the patch is Gaussian-weighted into the anatomy, ``y_2 = y_1 + G (patch - y_1)`` with the
    same Gaussian ``G`` as ``W`` (seed 001, Fig. 1b: weighting that removes the step at the patch border);
    otherwise it replaces the anatomy inside its box.

    Raises:
        ValueError: when a list is empty, a pathology image has no box, or ``num_samples < 1``.
    """
    from monai_synth.transforms import place_patch

    if num_samples < 1:
        raise ValueError(f"`num_samples` must be >= 1, got {num_samples}.")
    if not anatomy_images:
        raise ValueError("`anatomy_images` is empty: no anatomy reference.")
    with_box = [p for p in pathology_images if p.boxes]
    if not with_box:
        raise ValueError(
            "no pathology reference has a box: give an `annotation_dir` with PASCAL-VOC files named by "
            "SOPInstanceUID (or `pathology_boxes` for mammograms)."
        )
    rng = np.random.default_rng(seed)
    anat, path, weights, boxes, a_src, p_src = [], [], [], [], [], []
    for i in range(num_samples):
        a_img, p_img = anatomy_images[i % len(anatomy_images)], with_box[i % len(with_box)]
        y_1 = a_img.image
        patch, cut = cut_patch(p_img, p_img.boxes[0], margin)
        if patch_transform is not None:
            patch = patch_transform(patch, y_1, int(rng.integers(2**31)))
        rows, cols = y_1.shape[-2:]
        shift = rng.integers(-max_shift, max_shift + 1, size=2) if max_shift > 0 else np.zeros(2, int)
        cy = int(np.clip((cut.ymin + cut.ymax + 1) // 2 + shift[0], 0, rows - 1))
        cx = int(np.clip((cut.xmin + cut.xmax + 1) // 2 + shift[1], 0, cols - 1))
        placed = place_patch(patch, (rows, cols), center=(cy, cx), sigma_factor=sigma_factor)
        inside = placed.weight > 0
        if edge_blend:  # seed 001, Fig. 1b: Gaussian weighting towards the patch edges, fading into y_1
            y_2 = y_1 + placed.weight * (placed.canvas - y_1)
        else:  # the patch over the anatomy, not over a blank canvas
            y_2 = torch.where(inside, placed.canvas, y_1)
        anat.append(y_1)
        path.append(y_2)
        weights.append(placed.weight)
        boxes.append(_placed_lesion_box(p_img.boxes[0], cut, tuple(patch.shape[-2:]), (cy, cx), (rows, cols)))
        a_src.append(a_img.source)
        p_src.append(p_img.source)
    return ReferencePairs(torch.stack(anat), torch.stack(path), torch.stack(weights), boxes, a_src, p_src)


# ------------------------------------------------------------------------------------------------ sampling


def guided_sample_pairs(
    model: torch.nn.Module,
    scheduler,
    pairs: ReferencePairs,
    anatomy_factor: int = 4,
    pathology_factor: int = 2,
    anatomy_last_step: int = 0,
    pathology_last_step: int = 0,
    batch_size: int = 16,
    num_inference_steps: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Sample one image per reference pair with two-condition guidance (seed 001, Eqs. 4-5), in batches.

    Each batch is one call of :func:`~monai_synth.inferers.sampling.sample` with
    :func:`~monai_synth.inferers.guidance.anatomy_pathology_guidance`; batch ``k`` uses a generator seeded with
    ``seed + k``.

    Returns:
        ``(N, 1, size, size)`` samples on the CPU.
    """
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
    if device is None:
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    n = pairs.anatomy.shape[0]
    outs = []
    for k, start in enumerate(range(0, n, batch_size)):
        sl = slice(start, min(n, start + batch_size))
        guidance = anatomy_pathology_guidance(
            pairs.anatomy[sl].to(device),
            pairs.pathology[sl].to(device),
            pairs.weight[sl].to(device),
            anatomy_factor=anatomy_factor,
            pathology_factor=pathology_factor,
            anatomy_last_step=anatomy_last_step,
            pathology_last_step=pathology_last_step,
        )
        g = torch.Generator(device=device).manual_seed(int(seed) + k)
        x0 = sample(
            model,
            scheduler,
            shape=tuple(pairs.anatomy[sl].shape),
            generator=g,
            guidance=guidance,
            num_inference_steps=num_inference_steps,
            device=device,
        )
        outs.append(x0.detach().cpu())
    return torch.cat(outs)


def _to_uint8(img: torch.Tensor) -> np.ndarray:
    a = ((img.detach().cpu().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).numpy()
    return a[0] if a.ndim == 3 else a


def _save_png(path: Path, a: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(a).save(tmp, format="PNG")


def write_annotated_samples(
    images: torch.Tensor,
    boxes: Sequence[BoundingBox],
    out_dir: PathLike,
    prefix: str = "sample",
    extra: Sequence[dict[str, Any]] | None = None,
) -> list[Path]:
    """Write ``<prefix>_<i>.png`` (8-bit, ``[-1, 1]`` -> ``[0, 255]``), ``<prefix>_<i>_mask.png`` (box mask, 255
    inside) and ``<prefix>_<i>.json`` (``{"image", "mask", "size", "boxes": [{label, xmin, ymin, xmax, ymax}], ...}``).

    Returns:
        the JSON paths.
    """
    from monai_synth.data.annotations import boxes_to_mask

    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"`images` must be (N, 1, H, W), got shape {tuple(images.shape)}.")
    if len(boxes) != images.shape[0]:
        raise ValueError(f"`boxes` has {len(boxes)} entries but there are {images.shape[0]} images.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, (img, box) in enumerate(zip(images, boxes)):
        stem = f"{prefix}_{i:04d}"
        rows, cols = int(img.shape[-2]), int(img.shape[-1])
        _save_png(out / f"{stem}.png", _to_uint8(img))
        _save_png(out / f"{stem}_mask.png", boxes_to_mask([box], (rows, cols)) * 255)
        record = {
            "image": f"{stem}.png",
            "mask": f"{stem}_mask.png",
            "size": [rows, cols],
            "boxes": [box.to_dict()],
            **(dict(extra[i]) if extra else {}),
        }
        with atomic_path(out / f"{stem}.json") as tmp:
            Path(tmp).write_text(json.dumps(record, indent=2))
        written.append(out / f"{stem}.json")
    logger.info("wrote %d annotated samples to %s", len(written), out)
    return written


def load_trained_network(
    network: torch.nn.Module, checkpoint_dir: PathLike, use_ema: bool = False
) -> torch.nn.Module:
    """Load the latest checkpoint of the diffusion trainer into ``network`` (or its EMA copy) for sampling.

    Raises:
        ValueError: when ``checkpoint_dir`` holds no checkpoint.
    """
    from monai_synth.handlers.checkpoint import latest_checkpoint, load_checkpoint
    from monai_synth.handlers.ema import create_ema_model

    path = latest_checkpoint(checkpoint_dir)
    if path is None:
        raise ValueError(f"no checkpoint in {str(checkpoint_dir)!r}: run the training config first.")
    if use_ema:
        ema = create_ema_model(network)
        load_checkpoint(path, ema_model=ema, restore_rng=False)
        network.load_state_dict(ema.module.state_dict())
    else:
        load_checkpoint(path, network=network, restore_rng=False)
    logger.info("loaded %s weights from %s", "EMA" if use_ema else "network", path)
    return network.eval()


def with_boxes(images: Sequence[PreparedImage]) -> list[PreparedImage]:
    """The images that carry at least one pathology box (pathology references)."""
    return [im for im in images if im.boxes]


def without_boxes(images: Sequence[PreparedImage]) -> list[PreparedImage]:
    """The images without any box (anatomy references); all images when every one has a box."""
    out = [im for im in images if not im.boxes]
    return out or list(images)


def run_guided_sampling(
    model: torch.nn.Module,
    scheduler,
    anatomy_images: Sequence[PreparedImage],
    pathology_images: Sequence[PreparedImage],
    out_dir: PathLike,
    num_samples: int = 8,
    anatomy_factor: int = 4,
    pathology_factor: int = 2,
    anatomy_last_step: int = 0,
    pathology_last_step: int = 0,
    patch_transform: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor] | None = None,
    margin: float = 0.25,
    sigma_factor: float = 0.2,
    max_shift: int = 0,
    batch_size: int = 16,
    num_inference_steps: int | None = None,
    seed: int = 0,
    write_references: bool = True,
    edge_blend: bool = True,
) -> list[Path]:
    """Build reference pairs, sample them with guidance and write annotated outputs (one call for a bundle).

    Writes ``sample_<i>.png/.json/_mask.png``; with ``write_references`` also ``anatomy_<i>.png``,
    ``pathology_<i>.png`` (the conditions ``y_1`` and ``y_2``) and ``weight_<i>.png`` (``W``, 0-255).

    Returns:
        the JSON paths of the samples.
    """
    pairs = build_reference_pairs(
        anatomy_images,
        pathology_images,
        num_samples,
        patch_transform,
        margin,
        sigma_factor,
        max_shift,
        seed,
        edge_blend,
    )
    x0 = guided_sample_pairs(
        model,
        scheduler,
        pairs,
        anatomy_factor,
        pathology_factor,
        anatomy_last_step,
        pathology_last_step,
        batch_size,
        num_inference_steps,
        seed,
    )
    out = Path(out_dir)
    extra = [
        {
            "anatomy_reference": Path(a).name,  # file name only: folder names often hold patient ids
            "pathology_reference": Path(p).name,
            "anatomy_factor": anatomy_factor,
            "pathology_factor": pathology_factor,
        }
        for a, p in zip(pairs.anatomy_sources, pairs.pathology_sources)
    ]
    if write_references:
        out.mkdir(parents=True, exist_ok=True)
        for i in range(num_samples):
            _save_png(out / f"anatomy_{i:04d}.png", _to_uint8(pairs.anatomy[i]))
            _save_png(out / f"pathology_{i:04d}.png", _to_uint8(pairs.pathology[i]))
            _save_png(out / f"weight_{i:04d}.png", _to_uint8(pairs.weight[i] * 2.0 - 1.0))
    return write_annotated_samples(x0, pairs.boxes, out, "sample", extra)


def save_montage(sample_dir: PathLike, out_png: PathLike, num_rows: int = 4, scale: int = 3) -> Path:
    """One PNG for docs: per sample a row ``anatomy | pathology | W | sample | sample with its box (red)``.

    Reads what :func:`run_guided_sampling` wrote (with ``write_references=True``); pixels are repeated ``scale``
    times (nearest) so small images stay visible.
    """
    from PIL import Image

    d = Path(sample_dir)
    jsons = sorted(d.glob("sample_*.json"))[:num_rows]
    if not jsons:
        raise ValueError(f"no sample_*.json in {str(d)!r}: run the sampling config first.")
    rows = []
    for j in jsons:
        rec = json.loads(j.read_text())
        i = j.stem.split("_")[1]
        tiles = [np.asarray(Image.open(d / f"{name}_{i}.png").convert("L")) for name in ("anatomy", "pathology")]
        tiles.append(np.asarray(Image.open(d / f"weight_{i}.png").convert("L")))
        img = np.asarray(Image.open(d / rec["image"]).convert("L"))
        tiles.append(img)
        rgb = [np.repeat(np.kron(t, np.ones((scale, scale), np.uint8))[..., None], 3, axis=-1) for t in tiles]
        boxed = rgb[-1].copy()
        for b in rec["boxes"]:
            y0, y1 = b["ymin"] * scale, (b["ymax"] + 1) * scale - 1
            x0, x1 = b["xmin"] * scale, (b["xmax"] + 1) * scale - 1
            boxed[y0, x0 : x1 + 1] = boxed[y1, x0 : x1 + 1] = (255, 0, 0)
            boxed[y0 : y1 + 1, x0] = boxed[y0 : y1 + 1, x1] = (255, 0, 0)
        rgb.append(boxed)
        gap = np.full((rgb[0].shape[0], 2, 3), 255, np.uint8)
        rows.append(np.concatenate([x for t in rgb for x in (t, gap)][:-1], axis=1))
    hgap = np.full((2, rows[0].shape[1], 3), 255, np.uint8)
    grid = np.concatenate([x for r in rows for x in (r, hgap)][:-1], axis=0)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG", optimize=True)
    return out
