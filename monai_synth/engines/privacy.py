"""Near-copy filtering of synthetic images and the privacy report written beside every synthetic set.

A synthetic image that resembles a training image more than real images of *other* patients do is treated as a
possible copy of a patient's image and is not released. The measure is the copy descriptor of
:mod:`monai_synth.metrics.copy_detection` (tolerant of flips, shifts, gamma, crops and noise); the threshold is
calibrated on held-out real images the generator never saw, patient-disjoint from the training images where the
data says who the patients are (:func:`build_near_copy_filter`).

:func:`monai_synth.engines.generate_dataset` applies a :class:`NearCopyFilter` to every candidate **before** its file
is written and records dropped candidates in ``generation.json``, so a resumed run never re-creates them. Every
synthetic set gets ``privacy_report.json`` (:func:`privacy_report`), the same document that
``python -m monai_synth.privacy audit`` writes for any folder::

    {"method": "copy_descriptor", "threshold": 0.96, "n_synthetic": 200, "n_reference": 4436,
     "flagged": [{"synthetic": "normal/synth_000012", "reference": "train[311]", "score": 0.981}, ...],
     "checked": true, "filtered": true, "descriptor": {...}, "calibration": {...}}

``filtered: true`` means the flagged candidates were never written; an audit of existing files reports
``filtered: false`` (the flagged files are still there).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai_synth.metrics.copy_detection import COPY_METHOD, CopyDescriptor, NearCopyIndex, calibrate_threshold
from monai_synth.utils.io import PRIVATE_MODE, atomic_path

__all__ = [
    "PRIVACY_REPORT",
    "NearCopyFilter",
    "build_near_copy_filter",
    "near_copy_filter_for_splits",
    "privacy_report",
    "write_privacy_report",
]

logger = logging.getLogger(__name__)

PRIVACY_REPORT = "privacy_report.json"
"""File name of the report beside each synthetic set."""

ImagesLike = torch.Tensor | np.ndarray | Sequence[Mapping[str, Any]]


def _as_batch(images: ImagesLike, name: str) -> torch.Tensor | np.ndarray:
    """``(N, C, H, W)`` from an array or a list of ``{"image": (C, H, W)}`` items (the in-memory splits)."""
    if isinstance(images, (torch.Tensor, np.ndarray)):
        return images
    items = list(images)
    if not items:
        raise ValueError(f"`{name}` is empty: the near-copy filter needs real images.")
    try:
        return torch.stack([torch.as_tensor(np.asarray(it["image"]), dtype=torch.float32) for it in items])
    except (KeyError, TypeError, RuntimeError) as e:
        raise ValueError(
            f"`{name}` must be an (N, C, H, W) array or items with an 'image' array of one size: {e}"
        ) from e


@dataclass
class NearCopyFilter:
    """Flags candidates that score at or above ``threshold`` against an indexed reference (training) set.

    Attributes:
        index: the indexed reference images.
        threshold: copy-descriptor score at or above which a candidate is a suspected copy.
        calibration: how the threshold was chosen (quantile, held-out count, score quantiles, patient-disjoint).
        reference_ids: opaque id of each reference in reports (default ``train[<index>]``); never a file path.
    """

    index: NearCopyIndex
    threshold: float
    calibration: dict = field(default_factory=dict)
    reference_ids: Sequence[str] | None = None

    def __post_init__(self) -> None:
        t = float(self.threshold)
        if not math.isfinite(t) or not -1.0 <= t <= 1.0:
            raise ValueError(f"`threshold` (a copy-descriptor score) must be in [-1, 1], got {self.threshold!r}.")
        self.threshold = t
        if self.reference_ids is not None and len(self.reference_ids) != len(self.index):
            raise ValueError(f"{len(self.reference_ids)} `reference_ids` for {len(self.index)} reference images.")

    def reference_id(self, j: int) -> str:
        """Report id of reference ``j``."""
        return str(self.reference_ids[j]) if self.reference_ids is not None else f"train[{int(j)}]"

    def check(self, images: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(flagged (n,) bool, scores (n,), nearest reference (n,))`` for ``(n, C, H, W)`` images in [0, 1]."""
        scores, ref = self.index.search(images)
        return scores >= self.threshold, scores, ref

    def settings(self) -> dict:
        """What the filter's decisions depend on (recorded in ``generation.json``; a resume must match)."""
        quantised = (self.index.full * 1e3).round().to(torch.int32).numpy().tobytes()  # robust to float noise
        return {
            "method": COPY_METHOD, "threshold": self.threshold, "n_reference": len(self.index),
            "descriptor": self.index.descriptor.settings(), "calibration": dict(self.calibration),
            "reference_checksum": hashlib.sha256(quantised).hexdigest()[:16],
        }  # fmt: skip


def build_near_copy_filter(
    references: ImagesLike,
    holdout: ImagesLike | None = None,
    quantile: float = 0.99,
    threshold: float | None = None,
    descriptor: CopyDescriptor | None = None,
    reference_ids: Sequence[str] | None = None,
    patient_disjoint: bool | None = None,
) -> NearCopyFilter:
    """Index the training images and calibrate the threshold on held-out real images.

    Args:
        references: the generator's training images (``(N, C, H, W)`` in [0, 1] or items with an ``"image"``).
        holdout: real images the generator never saw, ideally of other patients (the validation split).
        quantile: share of held-out images scoring below the threshold (0.99: a candidate is dropped when it
            resembles a training image more than 99 % of unseen real images do; about 1 % of genuinely new
            images are dropped too).
        threshold: an explicit threshold instead of calibration (``holdout`` then unused).
        descriptor: copy-descriptor settings.
        reference_ids: opaque ids of the references for reports.
        patient_disjoint: whether ``holdout`` shares no patient with ``references`` (recorded; ``None`` = unknown).

    Raises:
        ValueError: neither ``holdout`` nor ``threshold``, or empty/malformed image sets (naming the argument).
    """
    index = NearCopyIndex(_as_batch(references, "references"), descriptor)
    if threshold is not None:
        return NearCopyFilter(index, float(threshold), {"explicit": True}, reference_ids)
    if holdout is None:
        raise ValueError(
            "the near-copy filter needs `holdout` (real images the generator never saw, e.g. the validation split) "
            "to calibrate its threshold, or an explicit `threshold`."
        )
    thr, scores = calibrate_threshold(index, _as_batch(holdout, "holdout"), quantile)
    calibration = {
        "quantile": float(quantile), "n_holdout": int(scores.numel()), "patient_disjoint": patient_disjoint,
        "holdout_score_median": float(scores.median()), "holdout_score_max": float(scores.max()),
    }  # fmt: skip
    logger.info("near-copy filter: threshold %.4f (%.3g quantile of %d held-out images)", thr, quantile, scores.numel())
    return NearCopyFilter(index, thr, calibration, reference_ids)


def near_copy_filter_for_splits(
    splits: Mapping[str, Sequence[Mapping[str, Any]]],
    quantile: float = 0.99,
    enabled: bool = True,
    patient_disjoint: bool | None = None,
) -> NearCopyFilter | None:
    """The filter for a generator trained on ``splits["train"]`` (the in-memory splits of
    :func:`~monai_synth.data.load_labelled_splits`): calibrated on ``splits["val"]`` (``splits["test"]`` when there
    is no validation split); ``None`` when not ``enabled`` (an explicit opt-out, recorded as unchecked).

    Raises:
        ValueError: no training images, or neither a validation nor a test split to calibrate on.
    """
    if not enabled:
        logger.warning("near-copy filter switched off: synthetic images will be written unchecked")
        return None
    holdout = list(splits.get("val") or []) or list(splits.get("test") or [])
    if not holdout:
        raise ValueError("the near-copy filter needs a validation or test split to calibrate its threshold.")
    return build_near_copy_filter(splits["train"], holdout, quantile, patient_disjoint=patient_disjoint)


def privacy_report(
    flagged: Sequence[Mapping[str, Any]],
    n_synthetic: int,
    near_copy_filter: NearCopyFilter | None,
    filtered: bool,
    **extra: Any,
) -> dict:
    """The privacy report of one synthetic set (module docstring); ``near_copy_filter=None``: not checked."""
    if near_copy_filter is None:
        return {
            "method": None, "threshold": None, "n_synthetic": int(n_synthetic), "n_reference": 0, "flagged": None,
            "checked": False, "filtered": False,
            "warning": "these images were NOT checked for near-copies of training images (the filter was switched "
            "off); run `python -m monai_synth.privacy audit` before releasing them.", **extra,
        }  # fmt: skip
    s = near_copy_filter.settings()
    rows = sorted(({**dict(r), "score": float(r["score"])} for r in flagged), key=lambda r: -r["score"])
    return {
        "method": s["method"], "threshold": s["threshold"], "n_synthetic": int(n_synthetic),
        "n_reference": s["n_reference"], "flagged": rows, "checked": True, "filtered": bool(filtered),
        "descriptor": s["descriptor"], "calibration": s["calibration"], **extra,
    }  # fmt: skip


def write_privacy_report(report: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write a report atomically as JSON, readable by the owner only (it names training images)."""
    path = Path(path)
    with atomic_path(path, PRIVATE_MODE) as tmp:
        tmp.write_text(json.dumps(dict(report), indent=1))
    return path
