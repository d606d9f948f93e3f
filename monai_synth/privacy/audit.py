"""Audit a synthetic image set for near-copies of real (training) images.

Usage::

    python -m monai_synth.privacy audit --synthetic SYN --reference TRAIN [--holdout HELDOUT | --threshold T] \\
        [--quantile 0.99] --out report.json

``SYN``, ``TRAIN`` and ``HELDOUT`` are each a folder of images (PNG, JPEG, DICOM files with or without the ``.dcm``
suffix, NIfTI, MHA/NRRD; searched recursively) or a datalist JSON (every list of ``{"image": path}`` entries in it;
relative paths resolve against the JSON's folder). ``HELDOUT`` holds real images the generator never saw, ideally of
other patients than ``TRAIN``: the threshold is the ``--quantile`` of their scores against ``TRAIN``. Images of any
size compare (the copy descriptor resizes them, :mod:`monai_synth.metrics.copy_detection`).

The report is the document written beside every synthetic set (:func:`monai_synth.engines.privacy_report`), with
``filtered: false`` (flagged files still exist) and file names relative to their folder. Exit status:
:data:`EXIT_CLEAN` (0) nothing flagged, :data:`EXIT_COPIES` (1) near-copies flagged, :data:`EXIT_ERROR` (2) bad
input or usage (the message names the file or option).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from monai_synth.data.image_io import PIL_SUFFIXES, is_dicom_path, load_image_2d, min_max, resize_images
from monai_synth.engines.privacy import build_near_copy_filter, privacy_report, write_privacy_report
from monai_synth.metrics.copy_detection import CopyDescriptor

__all__ = ["EXIT_CLEAN", "EXIT_COPIES", "EXIT_ERROR", "audit_folders", "collect_images", "main"]

logger = logging.getLogger(__name__)

EXIT_CLEAN, EXIT_COPIES, EXIT_ERROR = 0, 1, 2
IMAGE_SUFFIXES = (*PIL_SUFFIXES, ".dcm", ".nii", ".nii.gz", ".mha", ".mhd", ".nrrd")
LOAD_SIZE = 128  # images are read at this size (the descriptor works at 64 x 64)


class AuditInputError(ValueError):
    """A folder, datalist or image of the audit cannot be used (the message says which and why)."""


def _is_image(p: Path) -> bool:
    name = p.name.lower()
    if name.startswith("."):
        return False
    return any(name.endswith(s) for s in IMAGE_SUFFIXES) or (not p.suffix and is_dicom_path(p))


def _datalist_images(path: Path) -> list[Path]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AuditInputError(f"{str(path)!r} is not a readable datalist JSON ({e}).") from e
    lists = [v for v in doc.values() if isinstance(v, list)] if isinstance(doc, dict) else [doc]
    # entry lists only: a datalist also carries lists such as "class_names"
    lists = [v for v in lists if any(isinstance(e, dict) for e in v)]
    out = []
    for entries in lists:
        for k, entry in enumerate(entries):
            image = entry.get("image") if isinstance(entry, dict) else None
            if not isinstance(image, str) or not image:
                raise AuditInputError(f"{str(path)!r}: entry {k} has no 'image' path string.")
            p = Path(image)
            out.append(p if p.is_absolute() else path.parent / p)
    if not out:
        raise AuditInputError(f"{str(path)!r} lists no images (expected lists of {{'image': path}} entries).")
    return out


def collect_images(path: str | os.PathLike, name: str) -> tuple[list[Path], Path]:
    """The image files of a folder (recursive, sorted) or a datalist JSON, and the root their names are relative to.

    Raises:
        AuditInputError: the path does not exist, holds no images, or a datalist entry is not a file.
    """
    p = Path(path)
    if p.is_file() and p.suffix.lower() == ".json":
        files, root = _datalist_images(p), p.parent
    elif p.is_dir():
        files, root = sorted(f for f in p.rglob("*") if f.is_file() and _is_image(f)), p
    elif p.is_file() and _is_image(p):
        files, root = [p], p.parent
    else:
        raise AuditInputError(
            f"--{name} {str(p)!r} is neither an image folder nor a datalist JSON (or does not exist)."
        )
    if not files:
        raise AuditInputError(f"--{name} {str(p)!r} holds no images ({', '.join(IMAGE_SUFFIXES)}, or DICOM files).")
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise AuditInputError(f"--{name}: {len(missing)} listed image(s) do not exist, e.g. {str(missing[0])!r}.")
    return files, root


def _relative(f: Path, root: Path) -> str:
    try:
        return str(f.resolve().relative_to(root.resolve()))
    except ValueError:
        return f.name


def _batches(files: Sequence[Path], name: str, batch: int = 512) -> Iterator[torch.Tensor]:
    """``(n, 1, LOAD_SIZE, LOAD_SIZE)`` batches in [0, 1]; an unreadable file raises naming it."""
    for s in range(0, len(files), batch):
        images = []
        for f in files[s : s + batch]:
            try:
                x = load_image_2d(f, rescale=False)
            except Exception as e:  # readers raise many types for a broken file
                raise AuditInputError(
                    f"--{name}: cannot read {str(f)!r} as a 2D image ({type(e).__name__}: {e})."
                ) from e
            if not torch.isfinite(x).all():
                raise AuditInputError(f"--{name}: {str(f)!r} holds NaN or infinite values.")
            images.append(resize_images(min_max(x)[None], LOAD_SIZE)[0])
        yield torch.stack(images)


def audit_folders(
    synthetic: str | os.PathLike,
    reference: str | os.PathLike,
    holdout: str | os.PathLike | None = None,
    threshold: float | None = None,
    quantile: float = 0.99,
    descriptor: CopyDescriptor | None = None,
) -> dict:
    """The privacy report of ``synthetic`` against ``reference`` (module docstring).

    Raises:
        AuditInputError: unusable input (naming it); ValueError: neither ``holdout`` nor ``threshold``.
    """
    if holdout is None and threshold is None:
        raise AuditInputError("give --holdout (real images the generator never saw) to calibrate, or --threshold.")
    ref_files, ref_root = collect_images(reference, "reference")
    syn_files, syn_root = collect_images(synthetic, "synthetic")
    held = None
    if holdout is not None and threshold is None:
        hold_files, _ = collect_images(holdout, "holdout")
        held = torch.cat(list(_batches(hold_files, "holdout")))
    refs = torch.cat(list(_batches(ref_files, "reference")))
    ids = [_relative(f, ref_root) for f in ref_files]
    filt = build_near_copy_filter(refs, held, quantile, threshold, descriptor, reference_ids=ids)
    flagged = []
    offset = 0
    for batch in _batches(syn_files, "synthetic"):
        hit, scores, nearest = filt.check(batch)
        for k in torch.nonzero(hit).reshape(-1).tolist():
            flagged.append({"synthetic": _relative(syn_files[offset + k], syn_root),
                            "reference": filt.reference_id(int(nearest[k])), "score": float(scores[k])})  # fmt: skip
        offset += batch.shape[0]
    return privacy_report(flagged, len(syn_files), filt, filtered=False)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m monai_synth.privacy", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("audit", help="flag synthetic images that are near-copies of reference images")
    a.add_argument("--synthetic", required=True, help="folder of images or datalist JSON: the synthetic set")
    a.add_argument("--reference", required=True, help="folder or datalist: the real (training) images")
    a.add_argument("--holdout", help="folder or datalist: real images the generator never saw (calibration)")
    a.add_argument("--threshold", type=float, help="explicit score threshold in [-1, 1] instead of --holdout")
    a.add_argument("--quantile", type=float, default=0.99, help="calibration quantile of the held-out scores")
    a.add_argument("--out", default="privacy_report.json", help="report path (JSON)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (module docstring)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on usage errors, 0 on --help
        return int(e.code or 0)
    try:
        report = audit_folders(args.synthetic, args.reference, args.holdout, args.threshold, args.quantile)
        out = write_privacy_report(report, args.out)
    except (AuditInputError, ValueError, OSError) as e:
        sys.stderr.write(f"monai_synth.privacy audit: error: {e}\n")
        return EXIT_ERROR
    n = len(report["flagged"])
    sys.stdout.write(
        f"{n} of {report['n_synthetic']} synthetic images flagged as near-copies of {report['n_reference']} reference "
        f"images (threshold {report['threshold']:.4f}); report: {out}\n"
    )
    return EXIT_COPIES if n else EXIT_CLEAN
