"""Pathology patches and reference pairs of guided synthesis (seed 001, sections 2.1-2.2, Fig. 1b, Eqs. 4-5)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from monai_synth.apps.guided.data import PreparedImage
from monai_synth.data.annotations import BoundingBox
from monai_synth.data.ranges import from_unit_range, to_unit_range

__all__ = [
    "PASTE_MODES",
    "ReferencePairs",
    "build_reference_pairs",
    "cut_patch",
    "mammo_patch_transform",
    "prepare_mammo_patch",
]

#: How the prepared patch enters the pathology reference ``y_2`` (:func:`build_reference_pairs`).
PASTE_MODES = ("blend", "replace", "gaussian")


@dataclass
class ReferencePairs:
    """A batch of sampling conditions (seed 001, Eq. 4-5), all ``(N, 1, size, size)``.

    ``anatomy`` (``y_1``), ``pathology`` (``y_2``: the anatomy with the prepared patch pasted in its box),
    ``weight`` (``W``: Gaussian inside the box, 0 outside), the box of each sample and provenance strings.
    ``lesion`` is the anatomy with the prepared patch pasted unweighted: the target of the lesion check
    (:func:`monai_synth.metrics.lesion_in_box`), the same whatever the paste mode.
    """

    anatomy: torch.Tensor
    pathology: torch.Tensor
    weight: torch.Tensor
    boxes: list[BoundingBox]
    anatomy_sources: list[str]
    pathology_sources: list[str]
    lesion: torch.Tensor | None = None


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
    (:func:`build_reference_pairs`, ``paste``): ``"gaussian"`` multiplies the patch by the Gaussian as the paper
    does (darker towards the edges), ``"blend"`` fades it into the anatomy reference instead.

    Args:
        patch: ``(1, h, w)`` in ``[-1, 1]``.
        reference: anatomy reference ``(1, H, W)`` in ``[-1, 1]``.
        q_range: quantile range of ``RandQuantileNormalizeToReference``.
        augment: e.g. ``RandPatchAugment`` (applied to the ``(1, h, w)`` patch).
        seed: seed of the quantile draw.
    """
    from monai_synth.transforms import HistogramEqualize, RandQuantileNormalizeToReference

    p01 = torch.as_tensor(to_unit_range(patch))
    ref01 = torch.as_tensor(to_unit_range(reference))
    eq = torch.as_tensor(HistogramEqualize(output_range=(0.0, 1.0))(p01.numpy()))
    norm = RandQuantileNormalizeToReference(q_range=q_range)
    if seed is not None:
        norm.set_random_state(seed)
    p = torch.as_tensor(norm(eq.numpy(), reference=ref01.numpy()), dtype=torch.float32)
    if augment is not None:
        p = torch.as_tensor(augment(p), dtype=torch.float32)
    return from_unit_range(p).clamp(-1.0, 1.0)


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
    paste: str = "blend",
) -> ReferencePairs:
    """Pair anatomy references with pathology patches (seed 001, sections 2.1-2.2), cycling through both lists.

    Sample ``i`` uses anatomy ``i % A`` and the first box of pathology image ``i % P``; the patch (box grown by
    ``margin``) is optionally transformed (``patch_transform(patch, anatomy, seed_i)``, e.g.
    :func:`prepare_mammo_patch`), pasted into a copy of the anatomy at the box position (shifted by up to
    ``max_shift`` pixels) with ``place_patch``, and ``W`` is its Gaussian patch weight map (Eq. 5).
    ``paste`` chooses ``y_2`` inside the patch (``G`` is the Gaussian of ``W``):

    - ``"blend"``: ``y_2 = y_1 + G (patch - y_1)``, the patch faded into the anatomy (no step at its border);
    - ``"gaussian"``: seed 001, Fig. 1b, literally: the patch times ``G`` in ``[0, 1]`` intensities ("Gaussian
      weighting reduces pixel intensity at the edges"), pasted over the anatomy;
    - ``"replace"``: the patch as it is, pasted over the anatomy.

    Raises:
        ValueError: when a list is empty, a pathology image has no box, ``num_samples < 1`` or ``paste`` is
            unknown.
    """
    from monai_synth.transforms import place_patch

    if num_samples < 1:
        raise ValueError(f"`num_samples` must be >= 1, got {num_samples}.")
    if paste not in PASTE_MODES:
        raise ValueError(f"`paste` must be one of {list(PASTE_MODES)}, got {paste!r}.")
    if not anatomy_images:
        raise ValueError("`anatomy_images` is empty: no anatomy reference.")
    with_box = [p for p in pathology_images if p.boxes]
    if not with_box:
        raise ValueError(
            "no pathology reference has a box: give an `annotation_dir` with PASCAL-VOC files named by "
            "SOPInstanceUID (or `pathology_boxes` for mammograms)."
        )
    rng = np.random.default_rng(seed)
    anat, path, weights, boxes, a_src, p_src, lesions = [], [], [], [], [], [], []
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
        lesion = torch.where(inside, placed.canvas, y_1)  # the patch over the anatomy, not over a blank canvas
        if paste == "blend":  # Gaussian weighting towards the patch edges, fading into y_1
            y_2 = y_1 + placed.weight * (placed.canvas - y_1)
        elif paste == "gaussian":  # seed 001, Fig. 1b: intensity times the Gaussian, darker towards the edges
            y_2 = torch.where(
                inside, from_unit_range(torch.as_tensor(to_unit_range(placed.canvas)) * placed.weight), y_1
            )
        else:
            y_2 = lesion
        lesions.append(lesion)
        anat.append(y_1)
        path.append(y_2)
        weights.append(placed.weight)
        boxes.append(_placed_lesion_box(p_img.boxes[0], cut, tuple(patch.shape[-2:]), (cy, cx), (rows, cols)))
        a_src.append(a_img.source)
        p_src.append(p_img.source)
    return ReferencePairs(
        torch.stack(anat), torch.stack(path), torch.stack(weights), boxes, a_src, p_src, torch.stack(lesions)
    )
