"""Seed 002 (Cao et al.): training loss x FID feature dimension, at equal training budget -> JSON.

Usage::

    python benchmarks/loss_fid.py --data ../shared/data/pneumoniamnist/pneumoniamnist_reconstructed.npz \\
        --train-minutes 8 --losses l1 l2 huber --fid-dims 64 2048 --out benchmarks/results/loss_fid.json

For every loss the :class:`~monai_synth.engines.DiffusionRecipe` of :data:`EPSILON_STUDY` (only ``loss`` changed, no
epoch cap, so the budget is equal time) trains a generator for ``--train-minutes`` (reused from ``--work-dir/<loss>``
when it finished), samples ``--n-per-class`` images per class with the recipe's sampler, and measures FID and KID
(Inception features at every ``--fid-dims``) of the synthetic set against the real test split, beside FID(real train,
real test) on the same number of images. Cao et al. report, in their abstract, FID 0.85 at 64-d with L2 (their best)
and 15.2 at 2048-d with Huber.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def _stack(items: list[dict], n: int, seed: int) -> torch.Tensor:
    idx = np.random.default_rng(seed).permutation(len(items))[:n]
    return torch.stack([torch.as_tensor(np.asarray(items[i]["image"]), dtype=torch.float32) for i in idx])


EPSILON_STUDY = {"prediction_type": "epsilon", "channels": (32, 64, 64), "batch_size": 64, "lr_anneal_fraction": 0.0}
"""The recipe of this study (the pixel defaults until 2026-12-07): Cao et al. train epsilon-prediction DDPMs, whose
loss the study varies; ``--recipe`` overrides it field by field."""


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="MedMNIST .npz (or a folder data set)")
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--train-minutes", type=float, default=8.0)
    parser.add_argument("--losses", nargs="+", default=["l1", "l2", "huber"])
    parser.add_argument("--fid-dims", type=int, nargs="+", default=[64, 2048])
    parser.add_argument("--n-per-class", type=int, default=500)
    parser.add_argument("--fid-images", type=int, default=1000, help="images per set for FID / KID")
    parser.add_argument("--recipe", nargs="*", default=[], help="DiffusionRecipe overrides key=value (as utility.py)")
    parser.add_argument("--work-dir", default="./outputs/loss_fid")
    parser.add_argument("--out", default="loss_fid.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)

    from utility import _parse_recipe

    from monai_synth.apps.augmentation import load_generator, synthesize, train_generator
    from monai_synth.apps.augmentation.generator import GENERATOR_DONE
    from monai_synth.data import load_labelled_splits
    from monai_synth.engines import DiffusionRecipe
    from monai_synth.metrics import InceptionFeatureExtractor, compute_fid, compute_kid

    overrides = {**EPSILON_STUDY, **_parse_recipe(args.recipe)}

    data = Path(args.data)
    splits = load_labelled_splits("medmnist" if data.suffix == ".npz" else "folder", data, image_size=args.image_size)
    num_classes = max(int(it["label"]) for it in splits["train"]) + 1
    extractors = {d: InceptionFeatureExtractor(dims=d) for d in args.fid_dims}
    real = {k: _stack(splits[k], args.fid_images, seed=0) for k in ("train", "test")}
    real_feats = {d: {k: ext(v) for k, v in real.items()} for d, ext in extractors.items()}
    result: dict = {
        "data": data.name, "image_size": args.image_size, "train_minutes": args.train_minutes,
        "n_fid": int(min(args.fid_images, len(splits["test"]))),
        "real_train_vs_test": {str(d): float(compute_fid(f["train"], f["test"])) for d, f in real_feats.items()},
        "losses": {},
        "paper": {"source": "Cao et al. (seed 002), abstract", "l2_fid64": 0.85, "huber_fid2048": 15.2},
    }  # fmt: skip
    for loss in args.losses:
        recipe = DiffusionRecipe(
            **{"epochs": 100_000, **overrides}, image_size=args.image_size, train_minutes=args.train_minutes, loss=loss
        )
        work = Path(args.work_dir) / loss
        t0 = time.perf_counter()
        if (work / "generator" / GENERATOR_DONE).is_file():
            gen = load_generator(work / "generator", recipe, num_classes)
        else:
            gen = train_generator(splits["train"], recipe, work / "generator", num_classes=num_classes)
        train_s = time.perf_counter() - t0
        items, sample_s = synthesize(gen, args.n_per_class, work / "synthetic", recipe)
        synthetic = _stack(items, args.fid_images, seed=1)
        arm: dict = {"epochs": gen.epochs, "train_s": train_s, "sample_s": sample_s, "final_loss": gen.final_loss}
        for d, ext in extractors.items():
            feats = ext(synthetic)
            kid = compute_kid(feats, real_feats[d]["test"], subset_size=min(100, len(feats)), num_subsets=50)
            fid_st = float(compute_fid(feats, real_feats[d]["test"]))
            arm[str(d)] = {
                "fid_synth_test": fid_st, "fid_ratio": fid_st / result["real_train_vs_test"][str(d)],
                "kid_mean": float(kid.mean), "kid_std": float(kid.std),
            }  # fmt: skip
        result["losses"][loss] = arm
        print(loss, json.dumps(arm), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
