"""Sample the labelled synthetic set of the augmentation study from a trained generator."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from monai_synth.apps.augmentation.generator import GeneratorResult
from monai_synth.data.datalists import load_datalist_json
from monai_synth.data.splits import items_from_arrays
from monai_synth.engines.generate import generate_dataset
from monai_synth.engines.privacy import NearCopyFilter
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
    near_copy_filter: NearCopyFilter | None = None,
) -> tuple[list[dict[str, Any]], float]:
    """Sample ``n_per_class`` images per class with CFG + DDIM through :func:`generate_dataset` (PNG per class +
    ``datalist.json``, atomic and resumable) and read them back.

    With ``near_copy_filter`` (:func:`monai_synth.engines.build_near_copy_filter`) every candidate is checked against
    the training images before it is written; near-copies are never written and are listed in
    ``out_dir/privacy_report.json`` (docs/privacy.md). Without it the set is unchecked and the report says so.

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
        near_copy_filter=near_copy_filter,
    )
    wall = time.perf_counter() - t0
    timing = Path(result.out_dir) / "sampling_time.json"  # sampling seconds of this set, summed over resumed calls
    previous = json.loads(timing.read_text()) if timing.is_file() else {"wall_s": 0.0, "written": 0}
    if result.written:
        previous = {"wall_s": previous["wall_s"] + wall, "written": previous["written"] + result.written}
        with atomic_path(timing) as tmp:
            tmp.write_text(json.dumps(previous))
    wall = previous["wall_s"] if previous["written"] else wall
    entries = load_datalist_json(Path(result.out_dir) / "datalist.json", "training")  # absolute paths
    return items_from_arrays(stack_items(entries), [int(it["label"]) for it in entries]), wall
