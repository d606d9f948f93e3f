"""Generate a labelled synthetic dataset from a (class-conditional) diffusion model.

Layout of ``out_dir``::

    <fmt>/<class_name>/synth_<index:06d>.<ext>     one file per image and format (png, nifti, dicom)
    datalist_<fmt>.json                           {"training": [{"image": relative path, "label": int}, ...]}
    datalist.json                                 same as the first format's datalist
    dicom_uids.json                               Study/Series UIDs of the run (only with DICOM output)
    generation.json                               the sampling settings, a fingerprint of the model weights and
                                                  the candidates the near-copy filter dropped
    privacy_report.json                           the near-copy check of this set (engines.privacy)

Determinism and resume: the images are planned up front (class by class) and cut into batches of ``batch_size``;
batch ``b`` draws all its noise from ``torch.Generator().manual_seed(seed + b)``. So an image depends only on
``(model, seed, batch_size, its index)``: a re-run skips batches whose files all exist, re-samples a partly written
batch identically and writes only the missing files. ``generation.json`` records what the images depend on; a
re-run into the same folder with other settings or other weights is refused (it would silently mix two data sets).

Privacy: with a :class:`~monai_synth.engines.privacy.NearCopyFilter` every candidate is scored against the training
images before anything is written; a flagged candidate's index is added to ``generation.json`` (atomically, before
the batch's other files are written) and its files are never created, so a resumed run, which re-samples the same
candidates, skips it too. The requested class counts shrink by the dropped candidates (about 1 - quantile of
genuinely new images, docs/privacy.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.networks.schedulers import Scheduler
from monai.utils import optional_import

from monai_synth.data.datalists import write_datalist_json
from monai_synth.data.ranges import to_unit_range
from monai_synth.data.writers import FORMAT_SUFFIX, _check_format, write_image
from monai_synth.engines.privacy import PRIVACY_REPORT, NearCopyFilter, privacy_report, write_privacy_report
from monai_synth.engines.recipe import DiffusionRecipe
from monai_synth.handlers.checkpoint import load_weights_for_sampling
from monai_synth.handlers.ema import unwrap_model
from monai_synth.inferers.sampling import sample
from monai_synth.networks.autoencoder import decode_latents, latent_shape
from monai_synth.utils.io import FolderLock, atomic_path, ensure_writable_dir

tqdm, has_tqdm = optional_import("tqdm", name="tqdm")

__all__ = [
    "GenerationResult",
    "GenerationSettingsError",
    "plan_class_counts",
    "generate_dataset",
    "load_weights_for_sampling",
    "model_fingerprint",
]

MANIFEST = "generation.json"


class GenerationSettingsError(ValueError):
    """``out_dir`` already holds images generated with other settings or another model (see ``generation.json``)."""


def model_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 (16 hex) of the model's state dict (names, shapes, dtypes and values): identifies the weights."""
    h = hashlib.sha256()
    for name, tensor in unwrap_model(model).state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()[:16]


def _check_manifest(out: Path, settings: dict) -> None:
    """Write ``out/generation.json`` or, when it exists, refuse settings that differ from it."""
    path = out / MANIFEST
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise GenerationSettingsError(
                f"{str(path)!r} is unreadable ({e}); delete it only if every image in {str(out)!r} came from the "
                "settings you are running now, or generate into a new folder."
            ) from e
        diff = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
        if diff:
            detail = "; ".join(f"{k}: existing {a!r} vs now {b!r}" for k, (a, b) in sorted(diff.items()))
            raise GenerationSettingsError(
                f"{str(out)!r} already holds images generated with other settings ({detail}). Resuming would mix two "
                "data sets: generate into a new folder, or delete that folder to start over."
            )
        return
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(settings, indent=1))


def _dropped(out: Path) -> dict[int, dict]:
    """Candidates the near-copy filter dropped in earlier calls: ``{index: {"reference", "score"}}``."""
    return {int(k): v for k, v in json.loads((out / MANIFEST).read_text()).get("dropped", {}).items()}


def _record_dropped(out: Path, new: dict[int, dict]) -> None:
    """Add dropped candidates to ``generation.json`` (atomic replace) before any file of the batch is written."""
    path = out / MANIFEST
    doc = json.loads(path.read_text())
    doc["dropped"] = {**doc.get("dropped", {}), **{str(k): v for k, v in new.items()}}
    with atomic_path(path) as tmp:  # atomic_path fsyncs the folder after the replace
        tmp.write_text(json.dumps(doc, indent=1))


logger = logging.getLogger(__name__)


@dataclass
class GenerationResult:
    """What :func:`generate_dataset` did.

    Attributes:
        out_dir: the output folder.
        datalists: format -> datalist JSON path.
        counts: images per class.
        written: files written in this call.
        skipped: files that already existed.
        items: the datalist entries of the first format (absolute paths).
        dropped: candidate index -> ``{"reference", "score"}`` of the near-copies that were not written.
        privacy_report: path of ``privacy_report.json``.
    """

    out_dir: Path
    datalists: dict[str, Path] = field(default_factory=dict)
    counts: list[int] = field(default_factory=list)
    written: int = 0
    skipped: int = 0
    items: list[dict] = field(default_factory=list)
    dropped: dict[int, dict] = field(default_factory=dict)
    privacy_report: Path | None = None


def plan_class_counts(
    num_per_class: int | Sequence[int] | None = None,
    class_ratio: Sequence[float] | None = None,
    total: int | None = None,
    num_classes: int | None = None,
) -> list[int]:
    """Images per class from ``num_per_class`` (int or list) or from ``class_ratio`` and ``total``.

    Ratios are normalised; rounding uses the largest-remainder method so the counts sum to ``total``.

    Raises:
        ValueError: for missing/conflicting/negative arguments.
    """
    if (num_per_class is None) == (class_ratio is None):
        raise ValueError("Give exactly one of `num_per_class` or `class_ratio` (with `total`).")
    if num_per_class is not None:
        if isinstance(num_per_class, int):
            if num_classes is None:
                raise ValueError("`num_classes` is required with an integer `num_per_class`.")
            counts = [int(num_per_class)] * int(num_classes)
        else:
            counts = [int(n) for n in num_per_class]
    else:
        if total is None:
            raise ValueError("`total` is required with `class_ratio`.")
        ratio = np.asarray(class_ratio, dtype=float)
        if ratio.ndim != 1 or (ratio < 0).any() or ratio.sum() <= 0:
            raise ValueError(f"`class_ratio` must be non-negative with a positive sum, got {list(class_ratio)}.")
        exact = ratio / ratio.sum() * int(total)
        counts = np.floor(exact).astype(int)
        for i in np.argsort(-(exact - counts), kind="stable")[: int(total) - counts.sum()]:
            counts[i] += 1
        counts = counts.tolist()
    if num_classes is not None and len(counts) != int(num_classes):
        raise ValueError(f"{len(counts)} class counts given for num_classes={num_classes}.")
    if any(n < 0 for n in counts):
        raise ValueError(f"class counts must be >= 0, got {counts}.")
    return counts


def run_dicom_uids(out_dir: Path, num_classes: int, uid_root: str | None = None) -> dict:
    """The run's Study and per-class Series UIDs and its pseudonymous PatientID (``dicom_uids.json``, kept on
    resume): every run is its own "patient", so a PACS never merges two runs into one."""
    import secrets

    from pydicom.uid import generate_uid

    uid_file = out_dir / "dicom_uids.json"
    if uid_file.is_file():
        uids = json.loads(uid_file.read_text())
        if len(uids.get("series", [])) == num_classes and "patient_id" in uids:
            return uids

    def new() -> str:
        return generate_uid(prefix=uid_root) if uid_root else generate_uid()

    uids = {"study": new(), "series": [new() for _ in range(num_classes)], "patient_id": f"SYN{secrets.token_hex(6)}",
            "uid_root": uid_root}  # fmt: skip
    with atomic_path(uid_file) as tmp:
        tmp.write_text(json.dumps(uids, indent=2))
    return uids


def generate_dataset(
    model: torch.nn.Module,
    scheduler: Scheduler,
    out_dir: str | os.PathLike,
    num_per_class: int | Sequence[int] | None = None,
    class_ratio: Sequence[float] | None = None,
    total: int | None = None,
    num_classes: int | None = None,
    image_size: int | Sequence[int] = DiffusionRecipe.image_size,
    in_channels: int = 1,
    formats: Sequence[str] = ("png",),
    guidance_scale: float = DiffusionRecipe.guidance_scale,
    num_inference_steps: int | None = None,
    eta: float = DiffusionRecipe.sample_eta,
    guidance_interval: tuple[float, float] | None = DiffusionRecipe.guidance_interval,
    batch_size: int = 64,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
    value_range: tuple[float, float] = (-1.0, 1.0),
    device: str | torch.device | None = None,
    progress: bool = True,
    conditional: bool | None = None,
    autoencoder: torch.nn.Module | None = None,
    scale_factor: float = 1.0,
    near_copy_filter: NearCopyFilter | None = None,
    uid_root: str | None = None,
) -> GenerationResult:
    """Sample ``counts[c]`` images of every class with classifier-free guidance and write them with a datalist.

    Args:
        model: denoiser (EMA weights recommended, see :func:`load_weights_for_sampling`).
        scheduler: sampling scheduler (DDIM for few steps).
        out_dir: output folder (created).
        num_per_class: images per class (int, or one int per class); or ``class_ratio`` with ``total`` images.
        class_ratio, total: class proportions and the total number of images.
        num_classes: number of classes (defaults to the length of the counts).
        image_size, in_channels: spatial size (int for square, or a sequence) and image channels.
        formats: any of ``"png"``, ``"nifti"``, ``"dicom"``.
        guidance_scale: CFG weight ``w``.
        num_inference_steps: ``scheduler.set_timesteps`` value (``None`` keeps the scheduler's).
        eta: DDIM eta (0 for the other samplers).
        guidance_interval: CFG only in this noise-level interval (see :func:`monai_synth.inferers.sample`).
        batch_size: images per forward pass (also fixes the batch -> seed mapping, see module docstring).
        seed: base seed.
        class_names: folder/DICOM names of the classes (default ``class_<k>``).
        value_range: intensity range of the model output (mapped to [0, 1] for writing).
        device, progress: sampling device (default: the model's); a progress bar over batches.
        conditional: pass class labels to the model (default: when the network has ``num_class_embeds``; an
            unconditional model gets ``num_per_class=[N]``, all under class 0).
        autoencoder, scale_factor: for a latent model, the ``AutoencoderKL`` and latent scale ``s``: latents of
            ``image_size // factor`` are sampled and decoded as ``D(z / s)`` (``image_size`` is the decoded size).
        near_copy_filter: checks every candidate against the training images before it is written (module
            docstring; :func:`~monai_synth.engines.build_near_copy_filter`). ``None`` switches the check off: the
            images are written unchecked, with a warning, and ``privacy_report.json`` says so.
        uid_root: DICOM UID prefix of your organisation (ending with ``.``) for the Study/Series/SOP UIDs of DICOM
            output; default pydicom's root. Each run also gets a random pseudonymous PatientID (``dicom_uids.json``).

    Returns:
        a :class:`GenerationResult`.
    """
    counts = plan_class_counts(num_per_class, class_ratio, total, num_classes)
    n_cls = len(counts)
    fmts, names = _check_generation_args(formats, batch_size, class_names, n_cls, guidance_scale)
    _check_uid_root(uid_root)
    spatial = (int(image_size),) * 2 if isinstance(image_size, int) else tuple(int(s) for s in image_size)
    sample_shape = _sample_shape(model, autoencoder, int(in_channels), spatial)
    out = ensure_writable_dir(out_dir).resolve()  # datalists hold paths relative to their folder
    param = next(iter(model.parameters()), None)
    device = torch.device(device if device is not None else param.device if param is not None else "cpu")
    if num_inference_steps is not None:
        scheduler.set_timesteps(int(num_inference_steps))
    if conditional is None:
        conditional = getattr(unwrap_model(model), "num_class_embeds", None) is not None
    settings = _settings(
        model, scheduler, counts, names, spatial, in_channels, guidance_scale, eta, batch_size, seed, value_range,
        conditional, guidance_interval, autoencoder, scale_factor, near_copy_filter,
    )  # fmt: skip
    if near_copy_filter is None:
        logger.warning("generate_dataset: no near-copy filter: %s is not checked against the training images", out)
    decode = None if autoencoder is None else (autoencoder, float(scale_factor))

    def draw(idx: list[int], labels: list[int], b: int) -> torch.Tensor:
        return _sample_batch(
            model, scheduler, idx, labels, int(seed) + b, sample_shape, conditional, guidance_scale, eta,
            value_range, device, guidance_interval, decode,
        )  # fmt: skip

    with FolderLock(out, "generate_dataset"):  # a second process gets a clear error, not a mixed folder
        _check_manifest(out, settings)
        uids = run_dicom_uids(out, n_cls, uid_root) if "dicom" in fmts else None
        result = _generate_batches(draw, out, fmts, names, counts, int(batch_size), progress, near_copy_filter, uids)
    logger.info("generated %d files (%d existed) in %s", result.written, result.skipped, out)
    return result


def _settings(
    model: torch.nn.Module,
    scheduler: Scheduler,
    counts: Sequence[int],
    names: Sequence[str],
    spatial: tuple[int, ...],
    in_channels: int,
    guidance_scale: float,
    eta: float,
    batch_size: int,
    seed: int,
    value_range: tuple[float, float],
    conditional: bool,
    guidance_interval: tuple[float, float] | None,
    autoencoder: torch.nn.Module | None,
    scale_factor: float,
    near_copy_filter: NearCopyFilter | None,
) -> dict:
    """What the images of a generation folder depend on (``generation.json``; a resume must match)."""
    settings = {
        "model": model_fingerprint(model), "scheduler": type(scheduler).__name__,
        "prediction_type": getattr(scheduler, "prediction_type", None),
        "timesteps": [int(t) for t in getattr(scheduler, "timesteps", [])], "counts": [int(c) for c in counts],
        "class_names": list(names), "image_size": list(spatial), "in_channels": int(in_channels),
        "guidance_scale": float(guidance_scale), "eta": float(eta), "batch_size": int(batch_size), "seed": int(seed),
        "value_range": [float(v) for v in value_range], "conditional": bool(conditional),
    }  # fmt: skip
    if guidance_interval is not None:  # recorded only when set, so folders written before the option still resume
        settings["guidance_interval"] = [float(v) for v in guidance_interval]
    if autoencoder is not None:
        settings["autoencoder"] = model_fingerprint(autoencoder)
        settings["scale_factor"] = float(scale_factor)
    settings["privacy"] = None if near_copy_filter is None else near_copy_filter.settings()  # None = unchecked
    return settings


def _generate_batches(
    draw: Any,
    out: Path,
    fmts: Sequence[Any],
    names: Sequence[str],
    counts: Sequence[int],
    batch_size: int,
    progress: bool,
    near_copy_filter: NearCopyFilter | None,
    uids: dict | None,
) -> GenerationResult:
    """Sample, filter and write every batch with missing files; then the datalists and the privacy report."""
    for stale in (p for f in fmts for p in (out / f.value).glob("*/.synth_*.tmp")):  # left by a SIGKILL
        stale.unlink(missing_ok=True)  # safe: the folder lock guarantees no other writer
    labels = [c for c, n in enumerate(counts) for _ in range(n)]
    paths = {
        f: [out / f.value / names[c] / f"synth_{i:06d}{FORMAT_SUFFIX[f]}" for i, c in enumerate(labels)] for f in fmts
    }
    result = GenerationResult(out_dir=out, counts=list(counts), dropped=_dropped(out))
    starts = list(range(0, len(labels), batch_size))
    iterator = enumerate(starts)
    if progress and has_tqdm:
        iterator = tqdm(iterator, total=len(starts), desc="generating")
    for b, start in iterator:
        idx = list(range(start, min(start + batch_size, len(labels))))
        missing = [(i, f) for i in idx for f in fmts if i not in result.dropped and not paths[f][i].exists()]
        result.skipped += sum(i not in result.dropped for i in idx) * len(fmts) - len(missing)
        if not missing:
            continue
        images = draw(idx, labels, b)
        if not np.isfinite(np.asarray(images)).all():
            raise FloatingPointError(
                f"batch {b} (images {idx[0]}-{idx[-1]}) sampled NaN or infinite values: the model or the sampler "
                "diverged (check the training loss, or try more sampling steps); nothing of this batch was written."
            )
        if near_copy_filter is not None:
            missing = _filter_batch(near_copy_filter, images, idx, missing, labels, names, result, out)
        result.written += _write_batch(images, idx, missing, labels, paths, names, uids)
    _write_datalists(result, out, fmts, paths, labels, names)
    result.privacy_report = _write_report(result, out, len(labels), near_copy_filter)
    return result


def _sample_shape(
    model: torch.nn.Module, autoencoder: torch.nn.Module | None, in_channels: int, spatial: tuple[int, ...]
) -> tuple[int, ...]:
    """``(C, *spatial)`` the model samples: the image, or the autoencoder's latent; channels checked (errors name
    the argument)."""
    model_channels = getattr(unwrap_model(model), "in_channels", None)
    if autoencoder is not None:
        if in_channels != int(autoencoder.encoder.in_channels):
            takes = autoencoder.encoder.in_channels
            raise ValueError(f"`in_channels`={in_channels}, but the autoencoder takes {takes}.")
        shape = latent_shape(autoencoder, spatial)
        if isinstance(model_channels, int) and model_channels != shape[0]:
            raise ValueError(f"the model takes {model_channels} channels but the latents have {shape[0]}.")
        return shape
    if isinstance(model_channels, int) and in_channels != model_channels:
        raise ValueError(f"`in_channels`={in_channels}, but the model takes {model_channels}: set in_channels to that.")
    return (in_channels, *spatial)


def _write_datalists(
    result: GenerationResult,
    out: Path,
    fmts: Sequence[Any],
    paths: dict[Any, list[Path]],
    labels: Sequence[int],
    names: Sequence[str],
) -> None:
    """``datalist_<fmt>.json`` per format and ``datalist.json`` (the first format), without the dropped candidates;
    recorded in ``result``."""
    for k, f in enumerate(fmts):
        items = [{"image": Path(paths[f][i]), "label": c} for i, c in enumerate(labels) if i not in result.dropped]
        path = out / f"datalist_{f.value}.json"
        result.datalists[f.value] = write_datalist_json({"training": items}, path, class_names=names, synthetic=True)
        if k == 0:
            write_datalist_json({"training": items}, out / "datalist.json", class_names=names, synthetic=True)
            result.items = items


def _check_uid_root(uid_root: str | None) -> None:
    """A DICOM UID root: dot-separated numbers without leading zeros, ending with ``.``, at most 54 characters."""
    import re

    if uid_root is not None and (
        len(uid_root) > 54 or not re.fullmatch(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*\.", uid_root)
    ):
        raise ValueError(
            f"`uid_root` {uid_root!r} is not a DICOM UID root: digits in dot-separated parts without leading zeros, "
            "ending with '.', at most 54 characters (e.g. '1.2.826.0.1.3680043.10.543.')."
        )


def _check_generation_args(
    formats: Sequence[str], batch_size: int, class_names: Sequence[str] | None, n_cls: int, guidance_scale: float
) -> tuple[list[Any], list[str]]:
    """Validated formats and class names of :func:`generate_dataset` (errors name the argument)."""
    fmts = [_check_format(f) for f in formats]
    if not fmts:
        raise ValueError("`formats` must name at least one of ['dicom', 'nifti', 'png'].")
    if int(batch_size) < 1:
        raise ValueError(f"`batch_size` must be >= 1, got {batch_size!r}.")
    names = list(class_names) if class_names is not None else [f"class_{k}" for k in range(n_cls)]
    if len(names) != n_cls:
        raise ValueError(f"{len(names)} `class_names` given for {n_cls} classes.")
    for name in names:  # each becomes a folder under out_dir/<fmt>/: it must not climb out of it
        if not isinstance(name, str) or name in ("", ".", "..") or any(c in name for c in "/\\\0") or ":" in name:
            raise ValueError(
                f"class name {name!r} cannot be a folder name inside the output folder: use letters, digits, '_', "
                "'-' or '.', without path separators."
            )
    if not math.isfinite(float(guidance_scale)):
        raise ValueError(f"`guidance_scale` must be a finite number, got {guidance_scale!r}.")
    return fmts, names


def _sample_batch(
    model: torch.nn.Module,
    scheduler: Any,
    idx: Sequence[int],
    labels: Sequence[int],
    batch_seed: int,
    sample_shape: tuple[int, ...],
    conditional: bool,
    guidance_scale: float,
    eta: float,
    value_range: tuple[float, float],
    device: torch.device,
    guidance_interval: tuple[float, float] | None,
    decode: tuple[torch.nn.Module, float] | None = None,
) -> torch.Tensor:
    """Sample the images ``idx`` of one batch (seed ``batch_seed``) as ``(n, C, H, W)`` in [0, 1]."""
    generator = torch.Generator(device=device).manual_seed(batch_seed)
    batch_labels = torch.tensor([labels[i] for i in idx], device=device)
    x = sample(
        model,
        scheduler,
        shape=(len(idx), *sample_shape),
        class_labels=batch_labels if conditional else None,
        guidance_scale=guidance_scale,
        generator=generator,
        eta=eta,
        device=device,
        guidance_interval=guidance_interval,
    )
    if decode is not None:
        x = decode_latents(decode[0], x, decode[1], batch_size=len(idx))
    return to_unit_range(x, value_range)


def _candidate_name(names: Sequence[str], label: int, i: int) -> str:
    return f"{names[label]}/synth_{i:06d}"


def _filter_batch(
    near_copy_filter: NearCopyFilter,
    images: torch.Tensor,
    idx: Sequence[int],
    missing: Sequence[tuple[int, Any]],
    labels: Sequence[int],
    names: Sequence[str],
    result: GenerationResult,
    out: Path,
) -> list[tuple[int, Any]]:
    """Score a sampled batch; record new near-copies in ``generation.json`` first; return the files still to write."""
    flagged, scores, refs = near_copy_filter.check(
        torch.as_tensor(np.asarray(images), dtype=torch.float32).clamp(0, 1)
    )
    new = {
        i: {"synthetic": _candidate_name(names, labels[i], i), "reference": near_copy_filter.reference_id(int(r)),
            "score": float(sc)}
        for i, f, sc, r in zip(idx, flagged.tolist(), scores.tolist(), refs.tolist()) if f
    }  # fmt: skip
    if new:
        _record_dropped(out, new)
        result.dropped.update(new)
        logger.info("near-copy filter: dropped %d of %d candidates in this batch", len(new), len(idx))
    return [(i, f) for i, f in missing if i not in result.dropped]


def _write_batch(
    images: torch.Tensor,
    idx: Sequence[int],
    missing: Sequence[tuple[int, Any]],
    labels: Sequence[int],
    paths: dict[Any, list[Path]],
    names: Sequence[str],
    uids: dict | None,
) -> int:
    """Write the ``missing`` ``(index, format)`` files of one sampled batch; return the count."""
    for i, f in missing:
        c = labels[i]
        kwargs = None
        if f == "dicom":
            kwargs = {"study_uid": uids["study"], "series_uid": uids["series"][c], "label": c,
                      "class_name": names[c], "instance_number": i + 1, "patient_id": uids["patient_id"],
                      "uid_root": uids.get("uid_root")}  # fmt: skip
        paths[f][i].parent.mkdir(parents=True, exist_ok=True)
        write_image(images[i - idx[0]], paths[f][i], f, dicom_kwargs=kwargs)
    return len(missing)


def _write_report(
    result: GenerationResult, out: Path, n_candidates: int, near_copy_filter: NearCopyFilter | None
) -> Path:
    """``privacy_report.json`` of the set: the dropped candidates (never written), or 'not checked'."""
    flagged = [result.dropped[i] for i in sorted(result.dropped)]
    report = privacy_report(flagged, n_candidates, near_copy_filter, filtered=True, n_written=len(result.items))
    return write_privacy_report(report, out / PRIVACY_REPORT)
