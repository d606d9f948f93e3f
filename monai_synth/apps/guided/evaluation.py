"""Evaluate guided samples: FID / KID / SSIM / MS-SSIM / MSE against the real images, and the lesion check.

The guided bundles train on every prepared image, so there is no held-out test split: the real images are split in
two seeded halves, ``real train`` and ``real test``, whose distance is the floor a synthetic set can reach at this
number of images (:func:`monai_synth.evaluate.table1_evaluation` rows). The lesion check is the summary the
sampler wrote (``lesion_in_box.json``, :func:`monai_synth.metrics.lesion_in_box`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monai_synth.apps.guided.data import PreparedImage

__all__ = ["GUIDED_EVALUATION", "evaluate_guided_samples"]

GUIDED_EVALUATION = "guided_evaluation.json"


def evaluate_guided_samples(
    images: Sequence[PreparedImage],
    sample_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    fid_dims: int = 2048,
    max_images: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Table 1-style metrics of the samples in ``sample_dir`` against the real ``images``, plus the lesion check.

    Writes ``evaluation.{csv,md}`` and ``guided_evaluation.json`` (rows and lesion summary) into ``output_dir``.

    Raises:
        FileNotFoundError: when ``sample_dir`` holds no ``datalist.json`` (sample first).
        ValueError: with fewer than 4 real images (two halves of at least 2 are needed).
    """
    from monai_synth.data.ranges import to_unit_range
    from monai_synth.evaluate import table1_evaluation
    from monai_synth.utils.io import atomic_path, ensure_writable_dir

    samples = Path(sample_dir)
    listing = samples / "datalist.json"
    if not listing.is_file():
        raise FileNotFoundError(f"{str(listing)!r} does not exist: run the sampling config first.")
    if len(images) < 4:
        raise ValueError(f"need at least 4 real images to compare against, got {len(images)}.")
    out = ensure_writable_dir(Path(output_dir))
    real = [{"image": to_unit_range(im.image)} for im in images]
    order = np.random.default_rng(seed).permutation(len(real))
    half = len(real) // 2
    table = table1_evaluation(
        [real[i] for i in sorted(order[:half])],
        [real[i] for i in sorted(order[half:])],
        listing,
        max_images=max_images,
        seed=seed,
        output_dir=out,
        fid_dims=fid_dims,
    )
    lesion_file = samples / "lesion_in_box.json"
    report = {
        "sample_dir": str(samples),
        "n_real": len(real),
        "fid_dims": int(fid_dims),
        "rows": table.rows,
        "lesion_in_box": json.loads(lesion_file.read_text()) if lesion_file.is_file() else None,
    }
    with atomic_path(out / GUIDED_EVALUATION) as tmp:
        tmp.write_text(json.dumps(report, indent=2, default=float))
    return report
