"""Sample the labelled synthetic set of the augmentation study from a trained generator."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai_synth.apps.augmentation.generator import GeneratorResult
from monai_synth.data.datalists import load_datalist_json
from monai_synth.data.splits import items_from_arrays
from monai_synth.engines.generate import generate_dataset
from monai_synth.engines.privacy import filter_generated_dataset
from monai_synth.engines.recipe import DiffusionRecipe
from monai_synth.evaluate import stack_items
from monai_synth.utils.io import atomic_path, ensure_writable_dir

__all__ = ["synthesize"]


def synthesize(
    generator: GeneratorResult,
    n_per_class: int,
    out_dir: str | os.PathLike,
    recipe: DiffusionRecipe | None = None,
    batch_size: int = 100,
    seed: int = 1234,
    device: str | torch.device = "cpu",
    progress: bool = False,
    privacy_train: np.ndarray | torch.Tensor | None = None,
    privacy_threshold: float | None = None,
) -> tuple[list[dict[str, Any]], float]:
    """Sample ``n_per_class`` images per class with CFG + DDIM through :func:`generate_dataset` (PNG per class +
    ``datalist.json``, atomic and resumable) and read them back.

    With ``privacy_threshold`` (and ``privacy_train``, the ``(N, 1, H, W)`` training images in ``[0, 1]``), images
    closer than the threshold to a training image are removed and reported in ``out_dir/privacy_filter.csv``
    (:func:`monai_synth.engines.privacy.filter_generated_dataset`, see docs/reliability.md) before reading back.

    ``batch_size`` images share one forward pass (the default was the fastest measured on a 2-core CPU;
    docs/performance.md).

    Returns:
        (in-memory items ``{"image": (1, H, W) in [0, 1], "label"}`` as written to disk, wall seconds of sampling).
        The seconds are those spent sampling this set, summed over every call that wrote images into ``out_dir``
        (``out_dir/sampling_time.json``), so a call that finds the set complete reports the original cost.
    """
    recipe = recipe or DiffusionRecipe()
    sampler = recipe.sampling_scheduler(generator.scheduler)
    t0 = time.perf_counter()
    result = generate_dataset(
        generator.model,
        sampler,
        ensure_writable_dir(out_dir),
        num_per_class=int(n_per_class),
        num_classes=generator.num_classes,
        image_size=recipe.image_size,
        formats=("png",),
        guidance_scale=recipe.guidance_scale,
        num_inference_steps=recipe.sample_steps,
        eta=recipe.sampler_eta,
        guidance_interval=recipe.guidance_interval,
        batch_size=batch_size,
        seed=seed,
        device=device,
        progress=progress,
        autoencoder=generator.autoencoder,
        scale_factor=generator.scale_factor,
    )
    wall = time.perf_counter() - t0
    timing = Path(result.out_dir) / "sampling_time.json"  # sampling seconds of this set, summed over resumed calls
    previous = json.loads(timing.read_text()) if timing.is_file() else {"wall_s": 0.0, "written": 0}
    if result.written:
        previous = {"wall_s": previous["wall_s"] + wall, "written": previous["written"] + result.written}
        with atomic_path(timing) as tmp:
            tmp.write_text(json.dumps(previous))
    wall = previous["wall_s"] if previous["written"] else wall
    if privacy_threshold is not None:
        if privacy_train is None:
            raise ValueError("`privacy_train` (the training images) is required with `privacy_threshold`.")
        filter_generated_dataset(result.out_dir, privacy_train, privacy_threshold)
    entries = load_datalist_json(Path(result.out_dir) / "datalist.json", "training")  # absolute paths
    return items_from_arrays(stack_items(entries), [int(it["label"]) for it in entries]), wall
