"""Is the poor probability-flow ODE of a short-trained generator a property of its EMA weights? -> JSON.

Usage::

    python benchmarks/ode_diagnostic.py --work-dir RUN --recipe loss=l2 --out ode.json --grids DIR

On the generator that ``benchmarks/sampler_quality.py`` trained in ``--work-dir`` (same ``--recipe`` overrides),
samples 1000 class-balanced PneumoniaMNIST images with DDIM 50 at eta 0 (the ODE) and eta 1 from the raw
(non-EMA) weights, and at eta 0 from the EMA weights, and reports FID (2048-d) against 1000 real test images, the
pixel mean and standard deviation of each set (the real test set's too), and the seconds. ``--grids``: a PNG of 8
images per class for each setting.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/pneumoniamnist/pneumoniamnist_reconstructed.npz")
    ap.add_argument("--work-dir", required=True, help="the --work-dir of a sampler_quality.py run")
    ap.add_argument("--recipe", nargs="*", default=[], help="the recipe overrides of that run, key=value")
    ap.add_argument("--out", required=True)
    ap.add_argument("--grids", default=None, help="folder for one PNG grid per setting")
    args = ap.parse_args(argv)

    import sampler_quality as sq
    from utility import _parse_recipe

    from monai_synth.apps.augmentation import DiffusionRecipe, load_generator
    from monai_synth.data import load_labelled_splits
    from monai_synth.engines.generate import plan_class_counts
    from monai_synth.evaluate import stack_items
    from monai_synth.handlers.checkpoint import latest_checkpoint, load_weights_for_sampling
    from monai_synth.handlers.sample_grid import save_grid_png
    from monai_synth.metrics import InceptionFeatureExtractor, compute_fid
    from monai_synth.utils.io import atomic_path

    recipe = DiffusionRecipe(**{"epochs": 10_000, **_parse_recipe(args.recipe)})
    splits = load_labelled_splits("medmnist", args.data, recipe.image_size)
    gen_dir = Path(args.work_dir) / "generator"
    gen = load_generator(gen_dir, recipe, 2)
    ext = InceptionFeatureExtractor(dims=2048)
    rng = np.random.default_rng(0)
    test = stack_items([splits["test"][i] for i in rng.permutation(len(splits["test"]))[:1000]])
    f_test = ext(test)
    counts = plan_class_counts(class_ratio=[1.0, 1.0], total=1000)
    raw = load_weights_for_sampling(recipe.build_network(2, in_channels=1), latest_checkpoint(gen_dir / "checkpoints"),
                                    use_ema=False)  # fmt: skip
    res: dict = {"work_dir": str(args.work_dir), "recipe_overrides": args.recipe, "n": 1000}
    for name, model, etas in (("raw", raw, (0.0, 1.0)), ("ema", gen.model, (0.0,))):
        gen.model = model
        for eta in etas:
            t0 = time.perf_counter()
            setting = {"sampler": "ddim", "steps": 50, "w": 1.0, "interval": None, "eta": eta}
            imgs, _ = sq.sample_images(gen, recipe, setting, counts, 1234, 100)
            fid = float(compute_fid(ext(imgs), f_test))
            key = f"{name}_eta{eta}"
            res[key] = {"fid": fid, "seconds": time.perf_counter() - t0, "mean": float(imgs.mean()),
                        "std": float(imgs.std())}  # fmt: skip
            print(key, res[key], flush=True)
            if args.grids:
                g = torch.cat([imgs[:8], imgs[-8:]])[:, 0].numpy()
                g = np.concatenate([np.concatenate(list(g[:8]), 1), np.concatenate(list(g[8:]), 1)], 0)
                save_grid_png(np.round(np.clip(g, 0, 1) * 255).astype(np.uint8), Path(args.grids) / f"{key}.png")
    res["real_test"] = {"mean": float(test.mean()), "std": float(test.std())}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
