"""Seed 001's evaluation chain: real images plus increments of guided synthetic images -> classifier -> Table 1.

Krishna et al. (seed 001, section 3, Table 1) train a ConvNeXt for 20 epochs on 7,500 real mammograms, then on the same
plus 2,500, 5,000, 7,500 and 10,000 synthetic ones, 10 % of every training set with cancer, and report the test AUC
and F1 (0.588 with real data alone, 0.671 with +2,500). :func:`run_increments_study` does the same at the scale of
the data at hand: the real images the guided bundle prepared (labelled: a box or a known finding = 1, known
lesion-free = 0), split into train / validation / test; the training split thinned to ``positive_fraction``
positives; increments of the guided bundle's labelled synthetic set (``datalist.json`` of
:func:`~monai_synth.apps.guided.run_guided_sampling`) scaled by
:func:`~monai_synth.apps.augmentation.scaled_increments`; the classifier grid of
:func:`~monai_synth.apps.augmentation.run_study` (MLflow, resumable); a table beside the paper's.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monai_synth.apps.guided.data import PreparedImage

__all__ = [
    "SEED001_TABLE1",
    "generator_items",
    "labelled_items",
    "run_increments_study",
    "with_positive_fraction",
]

logger = logging.getLogger(__name__)

#: Seed 001, Table 1: synthetic images added -> (AUC, F1); 7,500 real mammograms (RSNA), 10 % with cancer.
SEED001_TABLE1: dict[int, tuple[float, float]] = {
    0: (0.588, 0.324),
    2500: (0.671, 0.391),
    5000: (0.639, 0.363),
    7500: (0.603, 0.326),
    10000: (0.599, 0.319),
}
INCREMENTS_REPORT = "increments.json"


def labelled_items(images: Sequence[PreparedImage]) -> list[dict[str, Any]]:
    """Classifier items ``{"image": (1, H, W) float32 in [0, 1], "label", "id"}`` of the images whose class is known
    (``PreparedImage.label``); ``id`` is the opaque reference id, never the file name."""
    from monai_synth.apps.guided.sampling import reference_id
    from monai_synth.data.ranges import to_unit_range

    out = []
    for im in images:
        if im.label is None:
            continue
        arr = to_unit_range(im.image)
        out.append({"image": arr, "label": int(im.label), "id": reference_id(im.source)})
    return out


def generator_items(images: Sequence[PreparedImage]) -> list[dict[str, Any]]:
    """Training items of a class-conditional generator (:func:`monai_synth.apps.augmentation.train_generator`):
    ``{"image": (1, H, W) float32 in [0, 1], "label"}``, label 1 for an image with a lesion (a box, or
    ``PreparedImage.label == 1``) and 0 for every other image (lesion-free or without an annotated lesion).

    Raises:
        ValueError: when ``images`` is empty.
    """
    from monai_synth.data.ranges import to_unit_range

    if not images:
        raise ValueError("`images` is empty: no training image was found.")
    return [{"image": to_unit_range(im.image), "label": int(bool(im.boxes) or im.label == 1)} for im in images]


def with_positive_fraction(items: Sequence[Mapping[str, Any]], fraction: float, seed: int = 0) -> list[dict]:
    """A seeded subset in which label 1 makes up ``fraction`` (as close as the counts allow, at least one of each
    class): the larger class is thinned, the order kept.

    Raises:
        ValueError: when ``fraction`` is not in (0, 1) or a class is missing.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"`positive_fraction` must lie in (0, 1), got {fraction!r}.")
    pos = [i for i, it in enumerate(items) if int(it["label"]) == 1]
    neg = [i for i, it in enumerate(items) if int(it["label"]) == 0]
    if not pos or not neg:
        raise ValueError(f"need images of both classes, got {len(neg)} without and {len(pos)} with a lesion.")
    rng = np.random.default_rng(seed)
    n_pos = max(1, int(round(fraction / (1.0 - fraction) * len(neg))))
    if n_pos <= len(pos):
        keep = set(neg) | set(rng.choice(pos, n_pos, replace=False).tolist())
    else:  # too few positives: thin the negatives instead
        n_neg = max(1, int(round((1.0 - fraction) / fraction * len(pos))))
        keep = set(pos) | set(rng.choice(neg, min(n_neg, len(neg)), replace=False).tolist())
    return [dict(items[i]) for i in sorted(keep)]


def _table(results: Sequence[Any]) -> list[dict[str, Any]]:
    paper = list(SEED001_TABLE1.items())
    rows = []
    for k, r in enumerate(results):
        m = r.test_metrics
        ref = paper[k] if k < len(paper) else (None, (float("nan"), float("nan")))
        rows.append({
            "synthetic_added": int(r.config.synthetic_added),
            "n_train": int(r.data_sizes.get("n_train_real", 0)) + int(r.data_sizes.get("n_synthetic_added", 0)),
            "auc": float(m.get("auc", float("nan"))),
            "f1_pos": float(m.get("f1_pos", float("nan"))),
            "accuracy": float(m.get("accuracy", float("nan"))),
            "paper_synthetic_added": ref[0],
            "paper_auc": ref[1][0],
            "paper_f1": ref[1][1],
        })  # fmt: skip
    return rows


def _markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    lines = [
        "| step | synthetic added | AUC | F1 (lesion) | accuracy | seed 001: added | AUC | F1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k, r in enumerate(rows):
        lines.append(
            f"| {k} | {r['synthetic_added']} | {r['auc']:.3f} | {r['f1_pos']:.3f} | {r['accuracy']:.3f} | "
            f"{r['paper_synthetic_added']} | {r['paper_auc']:.3f} | {r['paper_f1']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def run_increments_study(
    images: Sequence[PreparedImage],
    synthetic_datalist: str | os.PathLike,
    output_dir: str | os.PathLike,
    positive_fraction: float = 0.1,
    increments: Sequence[int] | None = None,
    steps: int = 4,
    classifier: Mapping[str, Any] | None = None,
    split: Sequence[float] = (0.6, 0.2, 0.2),
    seed: int = 0,
    tracking_uri: str | None = None,
    experiment: str = "guided_increments",
    device: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Seed 001's Table 1 on the data at hand (module docstring); writes ``increments.json`` and
    ``increments.md`` into ``output_dir`` and returns the report.

    Args:
        images: the bundle's prepared real images (``@images``).
        synthetic_datalist: the labelled guided samples (``<sample_dir>/datalist.json``).
        output_dir: study outputs (MLflow store ``mlruns.db`` unless ``tracking_uri``, weights, tables).
        positive_fraction: share of images with a lesion in every training set (seed 001: 10 %); also applied to
            the synthetic pool.
        increments: synthetic images added per arm; default ``scaled_increments(n_real_train, n_synthetic, steps)``.
        steps: increments after ``+0`` (seed 001: 4).
        classifier: ``ClassifierRunConfig`` options; default ConvNeXt (``convnext_micro``), 20 epochs, selection
            on validation AUC.
        split: real train / validation / test proportions (stratified).
        seed: split, thinning and classifier seed.
        tracking_uri, experiment, device, progress: as :func:`~monai_synth.apps.augmentation.run_study`.

    Raises:
        ValueError: when a class is missing, or the synthetic set is too small for the increments (before any
            training).
    """
    from monai_synth.apps.augmentation import StudyData, increments_grid, run_study, scaled_increments
    from monai_synth.data.datalists import load_datalist_json, split_datalist
    from monai_synth.engines.classification import ClassifierRunConfig
    from monai_synth.utils.io import atomic_path, ensure_writable_dir

    out = ensure_writable_dir(Path(output_dir).resolve())
    real = labelled_items(images)
    splits = split_datalist(real, ratios=split, seed=seed, stratify=True)
    train = with_positive_fraction(splits["training"], positive_fraction, seed)
    listing = Path(synthetic_datalist)
    if not listing.is_file():
        raise FileNotFoundError(f"synthetic datalist {str(listing)!r} does not exist: run the sampling config first.")
    synthetic = with_positive_fraction(load_datalist_json(listing), positive_fraction, seed)
    steps_n = list(increments) if increments is not None else scaled_increments(len(train), len(synthetic), steps)
    if max(steps_n) > len(synthetic):
        raise ValueError(
            f"the largest increment ({max(steps_n)}) exceeds the {len(synthetic)} synthetic images at "
            f"{positive_fraction:.0%} positives in {str(listing)!r}: sample more (num_samples) or give smaller "
            "increments; nothing was trained."
        )
    options = {
        "network": "convnext_micro", "epochs": 20, "selection_metric": "auc", "seed": seed,
        "synthetic_datalist": str(listing), **dict(classifier or {}),
    }  # fmt: skip
    configs = increments_grid(ClassifierRunConfig(**options), steps_n)
    results = run_study(
        configs,
        StudyData(train=train, val=splits["validation"], test=splits["test"], synthetic=synthetic),
        tracking_uri=tracking_uri,
        experiment=experiment,
        output_dir=out,
        study_name="seed001_increments",
        device=device,
        progress=progress,
    )
    rows = _table(results)
    report = {
        "real": {k: len(v) for k, v in splits.items()},
        "real_train_used": len(train),
        "synthetic_pool": len(synthetic),
        "positive_fraction": positive_fraction,
        "increments": steps_n,
        "classifier": {k: v for k, v in options.items() if k != "synthetic_datalist"},
        "rows": rows,
        "paper": "Krishna et al. (seed 001), Table 1: 7,500 real RSNA mammograms, ConvNeXt, 20 epochs, 10 % cancer",
    }
    with atomic_path(out / INCREMENTS_REPORT) as tmp:
        tmp.write_text(json.dumps(report, indent=2, default=float))
    with atomic_path(out / "increments.md") as tmp:
        tmp.write_text(_markdown(rows))
    logger.info("increments study:\n%s", _markdown(rows))
    return report
