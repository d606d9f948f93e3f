"""Guided sampling of the guided bundles (seed 001, Eqs. 4-5): batched sampling, annotated outputs, montage.

An unconditional DDPM is sampled with two low-pass conditions (Krishna et al., section 2.1, Eq. 4): an *anatomy*
reference for the whole image and a *pathology* reference inside a patch, weighted by ``W`` (Eq. 5), through
:func:`monai_synth.inferers.sampling.sample` with :func:`monai_synth.inferers.guidance.anatomy_pathology_guidance`.
Each sample is written as PNG with a box mask and a JSON annotation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import PathLike

from monai_synth.apps.guided.data import PreparedImage
from monai_synth.apps.guided.patches import ReferencePairs, build_reference_pairs
from monai_synth.data.annotations import BoundingBox, boxes_to_mask
from monai_synth.data.image_io import load_image_2d
from monai_synth.data.ranges import to_unit_range
from monai_synth.data.writers import to_uint8, write_png_uint8
from monai_synth.engines.privacy import PRIVACY_REPORT, privacy_report, write_privacy_report
from monai_synth.inferers.guidance import anatomy_pathology_guidance
from monai_synth.inferers.sampling import sample
from monai_synth.utils.io import PRIVATE_MODE, atomic_path

__all__ = [
    "GUIDANCE_MODES",
    "GuidedSampler",
    "guided_sample_pairs",
    "run_guided_sampling",
    "save_montage",
    "write_annotated_samples",
]

logger = logging.getLogger(__name__)

#: ``guidance_mode`` -> (how the patch enters ``y_2``, weighting of the anatomy term); docs/guided_sampling.md
#: gives their measured difference. ``paper_literal`` is seed 001 as written: Fig. 1b's Gaussian-weighted patch,
#: Eq. 4's unweighted anatomy term and Eq. 5's ``W`` on the pathology term.
GUIDANCE_MODES: dict[str, tuple[str, str]] = {
    "blend": ("blend", "complement"),
    "replace": ("replace", "complement"),
    "paper_literal": ("gaussian", "none"),
}
LESION_REPORT = "lesion_in_box.json"


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
    anatomy_weighting: str = "complement",
    class_labels: torch.Tensor | None = None,
    autoencoder: torch.nn.Module | None = None,
    scale_factor: float = 1.0,
) -> torch.Tensor:
    """Sample one image per reference pair with two-condition guidance (seed 001, Eqs. 4-5), in batches.

    Each batch is one call of :func:`~monai_synth.inferers.sampling.sample` with the conditions of
    :func:`~monai_synth.inferers.guidance.anatomy_pathology_guidance`; batch ``k`` uses a generator seeded with
    ``seed + k``. A pixel-space model is guided after every step (``MultiConditionGuidance``). With
    ``autoencoder`` the model is a latent one (``z = scale_factor * E(x)``): the chain runs on latents shaped like
    the encoded references, the same conditions act on the decoded clean prediction at image resolution
    (:class:`~monai_synth.inferers.LatentLowPassGuidance`) and the final latents are decoded.

    Args:
        class_labels: ``(N,)`` labels for a class-conditional model (``None``: unconditional).
        autoencoder: the first stage of a latent model, ``None`` for a pixel-space one.
        scale_factor: the latent scale ``s`` of ``autoencoder``.

    Returns:
        ``(N, 1, size, size)`` samples on the CPU.
    """
    from monai_synth.inferers.latent import LatentLowPassGuidance
    from monai_synth.networks.autoencoder import decode_latents

    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
    if class_labels is not None and len(class_labels) != pairs.anatomy.shape[0]:
        raise ValueError(
            f"`class_labels` has {len(class_labels)} entries for {pairs.anatomy.shape[0]} reference pairs."
        )
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
            anatomy_weighting=anatomy_weighting,
        )
        g = torch.Generator(device=device).manual_seed(int(seed) + k)
        labels = None if class_labels is None else torch.as_tensor(class_labels[sl], dtype=torch.long).to(device)
        if autoencoder is None:
            x0 = sample(
                model, scheduler, shape=tuple(pairs.anatomy[sl].shape), class_labels=labels, generator=g,
                guidance=guidance, num_inference_steps=num_inference_steps, device=device,
            )  # fmt: skip
        else:
            with torch.no_grad():
                latent_shape = autoencoder.encode(pairs.anatomy[sl][:1].to(device))[0].shape[1:]
            noise = torch.randn((sl.stop - sl.start, *latent_shape), generator=g, device=device)
            latent_guidance = LatentLowPassGuidance(autoencoder, scale_factor, guidance.conditions)
            z0 = sample(
                model, scheduler, noise=noise, class_labels=labels, generator=g,
                num_inference_steps=num_inference_steps, device=device, prediction_guidance=latent_guidance,
            )  # fmt: skip
            x0 = decode_latents(autoencoder, z0, scale_factor, batch_size)
        outs.append(x0.detach().cpu())
    return torch.cat(outs)


def _to_uint8(img: torch.Tensor) -> np.ndarray:
    """``(1, H, W)`` or ``(H, W)`` in [-1, 1] -> uint8 ``(H, W)``."""
    a = to_uint8(to_unit_range(img))
    return a[0] if a.ndim == 3 else a


def write_annotated_samples(
    images: torch.Tensor,
    boxes: Sequence[BoundingBox | None],
    out_dir: PathLike,
    prefix: str = "sample",
    extra: Sequence[dict[str, Any]] | None = None,
) -> list[Path]:
    """Write ``<prefix>_<i>.png`` (8-bit, ``[-1, 1]`` -> ``[0, 255]``), ``<prefix>_<i>_mask.png`` (box mask, 255
    inside) and ``<prefix>_<i>.json`` (``{"image", "mask", "size", "boxes": [{label, xmin, ymin, xmax, ymax}], ...}``).
    A ``None`` box (a sample without pathology) gets an empty mask and ``"boxes": []``.

    Returns:
        the JSON paths.
    """
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
        write_png_uint8(_to_uint8(img), out / f"{stem}.png")
        listed = [] if box is None else [box]
        write_png_uint8((boxes_to_mask(listed, (rows, cols)) * 255).astype(np.uint8), out / f"{stem}_mask.png")
        record = {
            "image": f"{stem}.png",
            "mask": f"{stem}_mask.png",
            "size": [rows, cols],
            "boxes": [b.to_dict() for b in listed],
            **(dict(extra[i]) if extra else {}),
        }
        with atomic_path(out / f"{stem}.json") as tmp:
            Path(tmp).write_text(json.dumps(record, indent=2))
        written.append(out / f"{stem}.json")
    logger.info("wrote %d annotated samples to %s", len(written), out)
    return written


def _check_guided_args(guidance_mode: str, positive_fraction: float, class_names: Sequence[str]) -> None:
    """Clear errors for the arguments of :func:`run_guided_sampling` that nothing downstream checks."""
    if guidance_mode not in GUIDANCE_MODES:
        raise ValueError(f"`guidance_mode` must be one of {list(GUIDANCE_MODES)}, got {guidance_mode!r}.")
    if not 0.0 <= float(positive_fraction) <= 1.0:
        raise ValueError(f"`positive_fraction` must lie in [0, 1], got {positive_fraction!r}.")
    if len(class_names) != 2:
        raise ValueError(f"`class_names` must name the two classes (without, with lesion), got {list(class_names)}.")


def _pair_labels(model: torch.nn.Module, n: int, n_pos: int) -> torch.Tensor | None:
    """Labels of ``n`` pairs for a class-conditional model (1 for the first ``n_pos``: lesion, else 0: anatomy
    only); ``None`` for an unconditional model."""
    if getattr(model, "num_class_embeds", None) is None:
        return None
    if int(model.num_class_embeds) < 2:
        raise ValueError(f"the model has {model.num_class_embeds} class embeddings; guided sampling needs labels 0/1.")
    return (torch.arange(n) < n_pos).long()


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
    write_references: bool = False,
    guidance_mode: str = "blend",
    reference_dir: PathLike | None = None,
    positive_fraction: float = 1.0,
    class_names: Sequence[str] = ("normal", "lesion"),
    dicom_hu_window: Sequence[float] | None = None,
    uid_root: str | None = None,
    autoencoder: torch.nn.Module | None = None,
    scale_factor: float = 1.0,
) -> list[Path]:
    """Build reference pairs, sample them with guidance and write annotated outputs (one call for a bundle).

    Writes ``sample_<i>.png/.json/_mask.png`` into ``out_dir``: the first ``round(num_samples *
    positive_fraction)`` samples carry a lesion (label 1, anatomy and pathology guidance), the rest are guided by
    their anatomy reference alone (label 0, no box, ``W = 0``). ``datalist.json`` lists them all for a classifier
    (``{"training": [{"image", "label", "boxes", "anatomy_reference", "pathology_reference"}], "labels"}``: the
    format of :func:`monai_synth.data.load_datalist_json`).

    Guided samples are patient-derived by design (each keeps the low frequencies of a real reference), but
    ``out_dir`` holds no real pixels and no file names: the sidecars name their references by opaque ids
    (:func:`reference_id`). Only with ``write_references`` are the real conditions written, to the separately named
    ``reference_dir`` (default: ``<out_dir>_REAL_references`` beside ``out_dir``): ``anatomy_<i>.png``,
    ``pathology_<i>.png`` (``y_1``, ``y_2``), ``weight_<i>.png`` (``W``, 0-255) and ``reference_ids.csv`` (opaque
    id -> file name, for the site only).

    ``guidance_mode`` (:data:`GUIDANCE_MODES`) chooses how the patch enters ``y_2`` and how the anatomy term is
    weighted. Each sidecar of a lesion sample carries its lesion check (``lesion_in_box``:
    :func:`monai_synth.metrics.lesion_in_box` at the pathology factor, scores only), and ``lesion_in_box.json``
    their summary.

    With ``dicom_hu_window`` (``(low, high)`` HU of the CT window the model was trained in) every sample is also
    written as ``sample_<i>.dcm``: signed 16-bit Hounsfield units with the synthetic markers of
    :func:`monai_synth.data.writers.write_synthetic_dicom` (one Study, one Series per class and a pseudonymous
    PatientID per output folder, under ``uid_root``); the sidecar names it under ``"dicom"``.

    A latent generator (``autoencoder`` and its ``scale_factor``, e.g. from
    :func:`monai_synth.apps.augmentation.load_generator`) is guided at image resolution
    (:func:`guided_sample_pairs`). A class-conditional model (one with class embeddings, as
    :func:`monai_synth.apps.augmentation.train_generator` trains on :func:`generator_items`) samples lesion pairs
    with label 1 and anatomy-only pairs with label 0.

    Returns:
        the JSON paths of the samples.
    """
    from monai_synth.metrics.lesion import lesion_in_box_batch

    _check_guided_args(guidance_mode, positive_fraction, class_names)
    n_pos = int(round(num_samples * float(positive_fraction)))
    paste, anatomy_weighting = GUIDANCE_MODES[guidance_mode]
    pairs = build_reference_pairs(
        anatomy_images, pathology_images, num_samples, patch_transform, margin, sigma_factor, max_shift, seed, paste
    )
    pairs = _without_lesion_after(pairs, n_pos)
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
        anatomy_weighting=anatomy_weighting,
        class_labels=_pair_labels(model, pairs.anatomy.shape[0], n_pos),
        autoencoder=autoencoder,
        scale_factor=scale_factor,
    )
    out = Path(out_dir)
    scores = lesion_in_box_batch(
        x0[:n_pos], pairs.anatomy[:n_pos], pairs.lesion[:n_pos], pairs.boxes[:n_pos], factor=pathology_factor
    )
    extra = _sidecar_records(pairs, n_pos, scores, anatomy_factor, pathology_factor, guidance_mode)
    if write_references:
        _write_references(pairs, out, reference_dir)
    written = _write_samples(x0, pairs, n_pos, extra, out, class_names, dicom_hu_window, uid_root)
    _write_reports(out, pairs, len(written), {"guidance_mode": guidance_mode, "factor": pathology_factor}, scores)
    return written


def _write_samples(
    x0: torch.Tensor,
    pairs: ReferencePairs,
    n_pos: int,
    extra: list[dict],
    out: Path,
    class_names: Sequence[str],
    dicom_hu_window: Sequence[float] | None,
    uid_root: str | None,
) -> list[Path]:
    """The samples (PNG, mask, sidecar; 16-bit HU DICOM with ``dicom_hu_window``) and their ``datalist.json``; boxes
    only for the first ``n_pos`` (lesion) samples. Returns the sidecar paths."""
    if dicom_hu_window is not None:
        _write_hu_dicoms(x0, [r["label"] for r in extra], out, tuple(dicom_hu_window), class_names, uid_root)
        for i, rec in enumerate(extra):
            rec["dicom"] = f"sample_{i:04d}.dcm"
    boxes = [b if i < n_pos else None for i, b in enumerate(pairs.boxes)]
    written = write_annotated_samples(x0, boxes, out, "sample", extra)
    _write_guided_datalist(out, extra, boxes, class_names)
    return written


def _sidecar_records(
    pairs: ReferencePairs, n_pos: int, scores: Sequence[Any], anatomy_factor: int, pathology_factor: int, mode: str
) -> list[dict[str, Any]]:
    """The sidecar fields of each sample beyond image, mask and boxes: label, opaque reference ids, settings and,
    for lesion samples, the lesion check."""
    records = []
    for i, (a, p) in enumerate(zip(pairs.anatomy_sources, pairs.pathology_sources)):
        rec = {
            "label": int(i < n_pos),
            "anatomy_reference": reference_id(a),  # opaque: file and folder names often hold patient ids or UIDs
            "pathology_reference": reference_id(p) if i < n_pos else None,
            "anatomy_factor": anatomy_factor,
            "pathology_factor": pathology_factor,
            "guidance_mode": mode,
            "patient_derived": True,
        }
        if i < n_pos:
            rec["lesion_in_box"] = scores[i].to_dict()
        records.append(rec)
    return records


def _write_reports(out: Path, pairs: ReferencePairs, n_written: int, settings: dict, scores: Sequence[Any]) -> None:
    """``privacy_report.json`` (not checked: patient-derived by design) and ``lesion_in_box.json`` (summary)."""
    from monai_synth.metrics.lesion import summarize_lesion_scores

    pathology = set(pairs.pathology_sources) - {""}  # "" marks a sample without lesion
    report = privacy_report(
        None, n_written, None, filtered=False,
        warning="NOT checked for near-copies: guided samples are patient-derived by design: each keeps the low "
        "spatial frequencies of a real reference image (seed 001, Eqs. 3-5), so a near-copy filter against the "
        "references would flag them all. Treat them as derived patient data (docs/privacy.md).",
        references={"n_anatomy": len(set(pairs.anatomy_sources)), "n_pathology": len(pathology)},
    )  # fmt: skip
    write_privacy_report(report, out / PRIVACY_REPORT)
    summary = {**settings, **summarize_lesion_scores(scores)}
    with atomic_path(out / LESION_REPORT) as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    logger.info("lesion in box: %s", summary)


def _without_lesion_after(pairs: ReferencePairs, n_pos: int) -> ReferencePairs:
    """Pairs ``n_pos`` and later lose their lesion: ``W = 0`` and ``y_2 = y_1`` (anatomy guidance only)."""
    if n_pos >= pairs.anatomy.shape[0]:
        return pairs
    weight, pathology = pairs.weight.clone(), pairs.pathology.clone()
    weight[n_pos:] = 0.0
    pathology[n_pos:] = pairs.anatomy[n_pos:]
    return dataclasses.replace(
        pairs,
        pathology=pathology,
        weight=weight,
        pathology_sources=pairs.pathology_sources[:n_pos] + [""] * (len(pairs.pathology_sources) - n_pos),
    )


def _write_hu_dicoms(
    x0: torch.Tensor,
    labels: Sequence[int],
    out: Path,
    hu_window: tuple[float, ...],
    class_names: Sequence[str],
    uid_root: str | None,
) -> None:
    """``sample_<i>.dcm`` in HU for every sample (see :func:`run_guided_sampling`)."""
    from monai_synth.data.writers import write_synthetic_dicom
    from monai_synth.engines.generate import run_dicom_uids

    if len(hu_window) != 2:
        raise ValueError(f"`dicom_hu_window` must be (low, high) HU, got {hu_window!r}.")
    out.mkdir(parents=True, exist_ok=True)
    uids = run_dicom_uids(out, len(class_names), uid_root)
    for i, (img, c) in enumerate(zip(x0, labels)):
        write_synthetic_dicom(
            to_unit_range(img), out / f"sample_{i:04d}.dcm", uids["study"], uids["series"][c], label=c,
            class_name=class_names[c], instance_number=i + 1, modality="CT", patient_id=uids["patient_id"],
            series_description="SYNTHETIC guided CT (seed 001)", uid_root=uids.get("uid_root"),
            hu_window=(float(hu_window[0]), float(hu_window[1])),
        )  # fmt: skip


def _write_references(pairs: ReferencePairs, out: Path, reference_dir: PathLike | None) -> None:
    """The real conditions of every sample, owner-only, to ``reference_dir`` (never ``out``)."""
    refs = Path(reference_dir) if reference_dir is not None else out.parent / f"{out.name}_REAL_references"
    if refs.resolve() == out.resolve():
        raise ValueError("`reference_dir` must differ from `out_dir`: real reference images never go with samples.")
    refs.mkdir(parents=True, exist_ok=True)
    for i in range(pairs.anatomy.shape[0]):  # real patient pixels: owner-only files
        for name, arr in ((f"anatomy_{i:04d}.png", _to_uint8(pairs.anatomy[i])),
                          (f"pathology_{i:04d}.png", _to_uint8(pairs.pathology[i])),
                          (f"weight_{i:04d}.png", to_uint8(pairs.weight[i][0].numpy()))):  # fmt: skip
            os.chmod(write_png_uint8(arr, refs / name), PRIVATE_MODE)
    sources = sorted((set(pairs.anatomy_sources) | set(pairs.pathology_sources)) - {""}, key=str)
    with atomic_path(refs / "reference_ids.csv", PRIVATE_MODE) as tmp:
        tmp.write_text("id,file\n" + "".join(f"{reference_id(s)},{Path(s).name}\n" for s in sources))


def _write_guided_datalist(
    out: Path, records: Sequence[dict[str, Any]], boxes: Sequence[BoundingBox | None], class_names: Sequence[str]
) -> Path:
    """``datalist.json`` beside the samples: one labelled item per sample, paths relative to the folder."""
    from monai_synth.data.datalists import write_datalist_json

    items = [
        {
            "image": out / f"sample_{i:04d}.png",
            "label": rec["label"],
            "boxes": [] if box is None else [box.to_dict()],
            "anatomy_reference": rec["anatomy_reference"],
            "pathology_reference": rec["pathology_reference"],
        }
        for i, (rec, box) in enumerate(zip(records, boxes))
    ]
    return write_datalist_json(
        {"training": items},
        out / "datalist.json",
        name="monai_synth guided samples",
        description="Synthetic images from guided sampling (seed 001); patient-derived by design.",
        labels={str(i): n for i, n in enumerate(class_names)},
    )


def reference_id(source: PathLike | str) -> str:
    """Opaque id of a reference image in sidecars: ``ref-`` + 12 hex of SHA-256 of its resolved path.

    Stable for a file, so samples from one reference can be grouped; not reversible without the site's files (the
    mapping is in ``reference_ids.csv`` only when references are written, :func:`run_guided_sampling`).
    """
    text = str(Path(str(source)).resolve()) if str(source) else ""
    return "ref-" + hashlib.sha256(text.encode()).hexdigest()[:12]


def save_montage(
    sample_dir: PathLike,
    out_png: PathLike,
    num_rows: int = 4,
    scale: int = 3,
    reference_dir: PathLike | None = None,
) -> Path:
    """One PNG for docs: per sample a row ``anatomy | pathology | W | sample | sample with its box (red)``.

    Reads what :func:`run_guided_sampling` wrote with ``write_references=True`` (references from ``reference_dir``,
    default ``<sample_dir>_REAL_references``); pixels are repeated ``scale`` times (nearest) so small images stay
    visible. The montage shows real images: keep it inside the site.
    """
    d = Path(sample_dir)
    refs = Path(reference_dir) if reference_dir is not None else d.parent / f"{d.name}_REAL_references"
    jsons = sorted(d.glob("sample_*.json"))[:num_rows]
    if not jsons:
        raise ValueError(f"no sample_*.json in {str(d)!r}: run the sampling config first.")
    rows = []
    for j in jsons:
        rec = json.loads(j.read_text())
        i = j.stem.split("_")[1]
        files = (refs / f"anatomy_{i}.png", refs / f"pathology_{i}.png", refs / f"weight_{i}.png", d / rec["image"])
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"{missing[0]!r} is missing: sample with write_references=True for a montage.")
        tiles = [load_image_2d(f, rescale=False)[0].numpy().astype(np.uint8) for f in files]
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
    return write_png_uint8(grid, out, optimize=True)


class GuidedSampler:
    """The sampling step of the guided bundles as one config component (``_target_``), run by calling it.

    Holds the arguments of :func:`run_guided_sampling` by name, so a bundle wires them with ``@`` references and
    runs ``$@sampler()``; see :func:`run_guided_sampling` for each argument.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        scheduler: Any,
        anatomy_images: Sequence[PreparedImage],
        pathology_images: Sequence[PreparedImage],
        out_dir: PathLike,
        **options: Any,
    ) -> None:
        self.network, self.scheduler = network, scheduler
        self.anatomy_images, self.pathology_images = anatomy_images, pathology_images
        self.out_dir, self.options = out_dir, options

    def __call__(self) -> list[Path]:
        """Sample and write; returns the JSON paths of the samples."""
        return run_guided_sampling(
            self.network, self.scheduler, self.anatomy_images, self.pathology_images, self.out_dir, **self.options
        )
