"""Privacy filter for generation: drop synthetic images that are near-copies of training images, and report them.

A synthetic image whose nearest training image is closer than a threshold (pixel RMS distance, see
:mod:`monai_synth.metrics.memorization`) is treated as a possible copy of a patient's image and is not released.
Distances come from :func:`monai_synth.metrics.memorization.nearest_neighbours`; this module adds what a generation
run needs around it: index bookkeeping across batches, a threshold derived from held-out real images, and a CSV/JSON
report of every dropped image with its nearest training image and distance.

Typical use (see docs/reliability.md)::

    threshold = threshold_from_holdout(train_images, test_images, quantile=0.01)
    # in memory, batch by batch:
    pf = PrivacyFilter(train_images, threshold)
    result = pf(synthetic_batch)                  # result.kept_indices -> write only those
    pf.write_report("out/privacy_filter.csv")     # and/or .json
    # or after generate_dataset(), on the written files (removes dropped files, rewrites the datalists):
    filter_generated_dataset("out", train_images, threshold)
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from monai_synth.data.datalists import write_datalist_json
from monai_synth.data.image_io import load_image_2d
from monai_synth.metrics.memorization import nearest_neighbours, pixel_vectors
from monai_synth.utils.io import atomic_path

__all__ = [
    "PrivacyFilter",
    "PrivacyFilterResult",
    "filter_generated_dataset",
    "privacy_filter",
    "threshold_from_holdout",
    "write_privacy_report",
]

logger = logging.getLogger(__name__)

REPORT_COLUMNS = ("synthetic_index", "nearest_train_index", "distance", "threshold", "image")


@dataclass
class PrivacyFilterResult:
    """Outcome of filtering one set (or batch) of synthetic images.

    Attributes:
        kept_indices: positions (within the filtered batch) of the images to keep, sorted.
        dropped_indices: global indices (``index_offset`` + position) of dropped images, sorted.
        nearest_train_indices: index of the nearest training image of each dropped image.
        distances: pixel RMS distance of each dropped image to that training image.
        threshold: the threshold used (drop when ``distance < threshold``).
        n_input: number of images checked.
    """

    kept_indices: list[int]
    dropped_indices: list[int]
    nearest_train_indices: list[int]
    distances: list[float]
    threshold: float
    n_input: int
    rows: list[dict] = field(default_factory=list)

    @property
    def n_dropped(self) -> int:
        """Number of dropped images."""
        return len(self.dropped_indices)


def _check_threshold(threshold: float) -> float:
    t = float(threshold)
    if not math.isfinite(t) or t < 0:
        raise ValueError(
            f"`threshold` (pixel RMS distance) must be a finite number >= 0, got {threshold!r}; use "
            "`threshold_from_holdout()` to derive one from held-out real images."
        )
    return t


def privacy_filter(
    synthetic: torch.Tensor | np.ndarray,
    train: torch.Tensor | np.ndarray,
    threshold: float,
    index_offset: int = 0,
    chunk_size: int = 1024,
) -> PrivacyFilterResult:
    """Drop synthetic images whose nearest training image is closer than ``threshold``.

    Args:
        synthetic: ``(n, C, *spatial)`` images in ``[0, 1]`` or uint8.
        train: ``(m, C, *spatial)`` training images, same size.
        threshold: pixel RMS distance; images with ``distance < threshold`` are dropped (0 keeps everything).
        index_offset: added to the reported indices (the number of images generated before this batch).
        chunk_size: queries per distance chunk.

    Returns:
        :class:`PrivacyFilterResult`.

    Raises:
        ValueError: negative/non-finite threshold, images outside ``[0, 1]``, or different sizes (see messages).
    """
    t = _check_threshold(threshold)
    syn, tr = pixel_vectors(synthetic, "synthetic"), pixel_vectors(train, "train")
    if syn.shape[1] != tr.shape[1]:
        raise ValueError(f"synthetic and train images differ in size: {syn.shape[1]} vs {tr.shape[1]} values.")
    distance, index = nearest_neighbours(syn, tr, chunk_size)
    drop = distance < t
    kept = torch.nonzero(~drop).reshape(-1).tolist()
    positions = torch.nonzero(drop).reshape(-1)
    dropped = [int(i) + int(index_offset) for i in positions]
    nearest = [int(i) for i in index[positions]]
    dist = [float(d) for d in distance[positions]]
    rows = [
        {"synthetic_index": i, "nearest_train_index": j, "distance": d, "threshold": t}
        for i, j, d in zip(dropped, nearest, dist)
    ]
    return PrivacyFilterResult([int(i) for i in kept], dropped, nearest, dist, t, int(syn.shape[0]), rows)


def threshold_from_holdout(
    train: torch.Tensor | np.ndarray, holdout: torch.Tensor | np.ndarray, quantile: float = 0.01
) -> float:
    """A threshold from real held-out images: the ``quantile`` of their nearest-training-image distances.

    A synthetic image closer to the training set than (say) 99 % of independent real images are is suspicious
    (the "distance to closest record" rule used in :mod:`monai_synth.metrics.memorization`).

    Raises:
        ValueError: ``quantile`` outside ``[0, 1]``.
    """
    if not 0.0 <= float(quantile) <= 1.0:
        raise ValueError(f"`quantile` must be in [0, 1], got {quantile!r}.")
    d, _ = nearest_neighbours(pixel_vectors(holdout, "holdout"), pixel_vectors(train, "train"))
    return float(torch.quantile(d, float(quantile)))


def write_privacy_report(rows: Sequence[dict], path: str | os.PathLike, summary: dict | None = None) -> Path:
    """Write the dropped images atomically as CSV (``.csv``) or JSON (any other suffix).

    CSV columns: ``synthetic_index, nearest_train_index, distance, threshold, image`` (one row per dropped image;
    ``image`` is the dropped file when known).
    JSON: ``{"summary": {...}, "dropped": [rows]}``.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".csv":
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(REPORT_COLUMNS))
                writer.writeheader()
                for r in rows:
                    writer.writerow({k: r.get(k, "") for k in REPORT_COLUMNS})
        else:
            tmp.write_text(json.dumps({"summary": summary or {}, "dropped": list(rows)}, indent=2))
    return path


def filter_generated_dataset(
    out_dir: str | os.PathLike,
    train: torch.Tensor | np.ndarray,
    threshold: float,
    report_path: str | os.PathLike | None = None,
    datalist: str = "datalist.json",
) -> PrivacyFilterResult:
    """Apply the privacy filter to a folder written by :func:`monai_synth.engines.generate.generate_dataset`.

    Reads the images listed in ``out_dir/<datalist>`` (the first format), drops those closer than ``threshold`` to a
    training image: their files are deleted in **every** format (``datalist_<fmt>.json`` lists them at the same
    position), every ``datalist*.json`` is rewritten without them, and the report is written to ``report_path``
    (default ``out_dir/privacy_filter.csv`` plus the same rows as ``.json`` with a summary). Indices in the report are
    positions in the original datalist.

    Args:
        out_dir: the generation output folder.
        train: ``(m, C, H, W)`` training images in ``[0, 1]`` or uint8, same size as the synthetic images.
        threshold: pixel RMS distance below which an image is dropped.
        report_path: CSV (or JSON) report path.
        datalist: name of the datalist whose images are checked.

    Returns:
        the :class:`PrivacyFilterResult` (``kept_indices`` are positions in the original datalist).

    Raises:
        FileNotFoundError: ``out_dir/<datalist>`` does not exist.
    """
    out = Path(out_dir)
    main = out / datalist
    if not main.is_file():
        raise FileNotFoundError(f"{str(main)!r} does not exist: run generate_dataset first or pass `datalist=`.")
    doc = json.loads(main.read_text())
    items = doc.get("training", [])
    images = (
        np.stack([load_image_2d(out / it["image"], rescale="dtype").numpy() for it in items])
        if items
        else np.zeros((0, 1, 1, 1))
    )
    result = privacy_filter(images, train, threshold) if items else PrivacyFilterResult([], [], [], [], threshold, 0)
    dropped = set(result.dropped_indices)
    for row in result.rows:
        row["image"] = items[row["synthetic_index"]]["image"]
    for dl_path in sorted(out.glob("datalist*.json")):
        dl = json.loads(dl_path.read_text())
        entries = dl.get("training", [])
        if len(entries) != len(items):
            logger.warning("%s lists %d images, %s lists %d: not rewritten", dl_path, len(entries), main, len(items))
            continue
        for i in sorted(dropped):
            (out / entries[i]["image"]).unlink(missing_ok=True)
        header = {k: v for k, v in dl.items() if k != "training"}
        kept = [{**e, "image": str((out / e["image"]).resolve())} for i, e in enumerate(entries) if i not in dropped]
        write_datalist_json({"training": kept}, dl_path, **header)
    report = Path(report_path) if report_path is not None else out / "privacy_filter.csv"
    summary = {"threshold": result.threshold, "n_checked": result.n_input, "n_dropped": result.n_dropped}
    write_privacy_report(result.rows, report, summary)
    if report.suffix.lower() == ".csv":
        write_privacy_report(result.rows, report.with_suffix(".json"), summary)
    logger.info("privacy filter: dropped %d/%d images from %s", result.n_dropped, result.n_input, out)
    return result


class PrivacyFilter:
    """Stateful privacy filter for a generation run that produces images batch by batch.

    Each call filters one batch against the training images and remembers what it dropped (with global indices, so
    reports from several batches line up with the generation order); :meth:`write_report` writes the record.

    Args:
        train: ``(m, C, *spatial)`` training images in ``[0, 1]`` or uint8.
        threshold: pixel RMS distance below which a synthetic image is dropped.
        chunk_size: queries per distance chunk.
    """

    def __init__(self, train: torch.Tensor | np.ndarray, threshold: float, chunk_size: int = 1024) -> None:
        self.threshold = _check_threshold(threshold)
        self.train = train
        self.chunk_size = int(chunk_size)
        self.rows: list[dict] = []
        self.n_checked = 0

    def __call__(self, synthetic: torch.Tensor | np.ndarray, index_offset: int | None = None) -> PrivacyFilterResult:
        """Filter one batch; ``index_offset`` defaults to the number of images checked so far."""
        offset = self.n_checked if index_offset is None else int(index_offset)
        result = privacy_filter(synthetic, self.train, self.threshold, offset, self.chunk_size)
        self.rows.extend(result.rows)
        self.n_checked += result.n_input
        return result

    def summary(self) -> dict:
        """``{"threshold", "n_checked", "n_dropped"}``."""
        return {"threshold": self.threshold, "n_checked": self.n_checked, "n_dropped": len(self.rows)}

    def write_report(self, path: str | os.PathLike) -> Path:
        """Write the dropped images so far (CSV or JSON by suffix, see :func:`write_privacy_report`)."""
        path = write_privacy_report(self.rows, path, self.summary())
        logger.info("privacy filter: dropped %d/%d images; report %s", len(self.rows), self.n_checked, path)
        return path
