"""Why is the probability-flow ODE of a short-trained generator poor: its EMA weights, or its x_0 estimates? -> JSON.

Usage::

    python benchmarks/ode_diagnostic.py --work-dir RUN --recipe loss=l2 --out ode.json --grids DIR

On the generator that ``benchmarks/sampler_quality.py`` trained in ``--work-dir`` (same ``--recipe`` overrides),
samples 1000 class-balanced PneumoniaMNIST images with DDIM 50 at eta 0 (the ODE) and eta 1 from the raw
(non-EMA) weights, and at eta 0 from the EMA weights, and reports FID (2048-d) against 1000 real test images, the
pixel mean and standard deviation of each set (the real test set's too), and the seconds. ``--grids``: a PNG of 8
images per class for each setting.

``--profile``: instead, the network's clean-image estimate (for epsilon prediction
``x_0 = (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t)``, :func:`monai_synth.inferers.sampling.predicted_x0`) at a
grid of timesteps, on 256 real test images noised with known noise: its RMSE against the true image, the RMSE of
the training mean image (what the ideal denoiser approaches at high noise), and the fraction of pixels outside
[-1, 1] (where the samplers' clipping acts).
"""

from __future__ import annotations

import argparse
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
    ap.add_argument("--profile", action="store_true", help="only the x_0 error profile over timesteps")
    args = ap.parse_args(argv)

    import sampler_quality as sq
    from utility import _parse_recipe

    from monai_synth.apps.augmentation import DiffusionRecipe, load_generator
    from monai_synth.data import load_labelled_splits
    from monai_synth.engines.generate import plan_class_counts
    from monai_synth.evaluate import stack_items
    from monai_synth.handlers.checkpoint import latest_checkpoint, load_weights_for_sampling
    from monai_synth.handlers.sample_grid import make_grid, save_grid_png
    from monai_synth.metrics import InceptionFeatureExtractor, compute_fid

    recipe = DiffusionRecipe(**{"epochs": 10_000, **_parse_recipe(args.recipe)})
    splits = load_labelled_splits("medmnist", args.data, recipe.image_size)
    gen_dir = Path(args.work_dir) / "generator"
    gen = load_generator(gen_dir, recipe, 2)
    rng = np.random.default_rng(0)
    test_order = rng.permutation(len(splits["test"]))
    if args.profile:
        idx = rng.permutation(len(splits["test"]))[:256]
        x0 = stack_items([splits["test"][i] for i in idx]) * 2 - 1
        labels = torch.tensor([int(splits["test"][i]["label"]) for i in idx])
        mean = (stack_items(splits["train"][:2000]) * 2 - 1).mean(0, keepdim=True)
        res = {"work_dir": str(args.work_dir), "recipe_overrides": args.recipe, "n": len(idx),
               "profile": x0_error_profile(gen, x0, labels, mean, (980, 900, 800, 600, 400, 200, 100, 40, 10))}
        sq._write_json(res, args.out)
        return res
    ext = InceptionFeatureExtractor(dims=2048)
    test = stack_items([splits["test"][i] for i in test_order[:1000]])
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
            if args.grids:  # first row class 0, second row class 1
                grid = make_grid(torch.cat([imgs[:8], imgs[-8:]]), nrow=8, value_range=(0.0, 1.0))
                save_grid_png(grid, Path(args.grids) / f"{key}.png")
    res["real_test"] = {"mean": float(test.mean()), "std": float(test.std())}
    sq._write_json(res, args.out)
    return res


@torch.no_grad()
def x0_error_profile(gen, x0: torch.Tensor, labels: torch.Tensor, mean: torch.Tensor, timesteps) -> list[dict]:
    """Per timestep: RMSE of the network's ``x_0`` estimate and of ``mean`` against ``x0`` (in [-1, 1]), and the
    fraction of estimated pixels outside [-1, 1]. Noise drawn with a fixed seed."""
    from monai_synth.inferers.sampling import predicted_x0

    g = torch.Generator().manual_seed(0)
    rows = []
    for t in timesteps:
        steps = torch.full((len(x0),), t, dtype=torch.long)
        xt = gen.scheduler.add_noise(x0, torch.randn(x0.shape, generator=g), steps)
        est = predicted_x0(gen.scheduler, gen.model(xt, timesteps=steps, class_labels=labels), xt, t)
        rows.append({"t": int(t), "alpha_bar": float(gen.scheduler.alphas_cumprod[t]),
                     "rmse_x0_network": float(((est - x0) ** 2).mean().sqrt()),
                     "rmse_x0_train_mean": float(((mean - x0) ** 2).mean().sqrt()),
                     "fraction_outside": float((est.abs() > 1).float().mean())})  # fmt: skip
        print(rows[-1], flush=True)
    return rows


if __name__ == "__main__":
    main()
