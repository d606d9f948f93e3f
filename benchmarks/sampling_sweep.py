"""Sampling-settings sweep on one trained generator: FID and wall time per (guidance, steps, eta, class mix).

Usage::

    python benchmarks/sampling_sweep.py --generator RUN/generator --data PNEUMONIA.npz \\
        --configs "w=2,steps=25,eta=1" "w=1,steps=25,eta=1" --n 500 --out sweep.json

``--generator`` is a folder that :func:`monai_synth.apps.augmentation.train_generator` finished (its recipe is read from
``summary.json`` beside it, or given with ``--recipe key=value``). For every configuration ``n`` images are sampled
in memory with a fixed seed, timed, and compared with the real test split (Inception 2048-d FID). The real
train-vs-test FID at the same ``n`` is computed once, so ``fid_ratio`` is measured at equal set sizes (FID is biased
upwards for small sets). Class mix ``mix=balanced`` draws equal numbers per class; ``mix=train`` draws the training
split's class proportions. Results go to JSON and, with ``--tracking-uri``/default, one MLflow run per config.
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger("sampling_sweep")


def parse_config(text: str) -> dict:
    """``"w=2,steps=25,eta=1,mix=balanced"`` -> dict with defaults filled in."""
    cfg = {"w": 2.0, "steps": 25, "eta": 1.0, "mix": "balanced"}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key not in cfg:
            raise SystemExit(f"config entries are w=, steps=, eta=, mix=; got {part!r} in {text!r}")
        cfg[key] = value if key == "mix" else ast.literal_eval(value)
    if cfg["mix"] not in ("balanced", "train"):
        raise SystemExit(f"mix must be 'balanced' or 'train', got {cfg['mix']!r}")
    cfg["steps"] = int(cfg["steps"])
    cfg["w"], cfg["eta"] = float(cfg["w"]), float(cfg["eta"])
    return cfg


def sample_set(gen, recipe, cfg: dict, counts: list[int], seed: int, batch_size: int) -> torch.Tensor:
    """Sample ``sum(counts)`` images (labels in class order) with the DDIM settings of ``cfg``; returns [0, 1]."""
    from sampler_quality import sample_images

    setting = {"sampler": "ddim", "steps": cfg["steps"], "w": cfg["w"], "eta": cfg["eta"], "interval": None}
    return sample_images(gen, recipe, setting, counts, seed, batch_size)[0]


def real_features(extractor, splits, n: int, cache: Path | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Inception features of ``n`` random real train and test images (seed 0), read from / written to ``cache``."""
    from monai_synth.evaluate import stack_items

    if cache is not None and cache.is_file():
        z = np.load(cache)
        return torch.from_numpy(z["train"]), torch.from_numpy(z["test"])
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    f_train = extractor(stack_items([splits["train"][i] for i in rng.permutation(len(splits["train"]))[:n]]))
    f_test = extractor(stack_items([splits["test"][i] for i in rng.permutation(len(splits["test"]))[:n]]))
    log.info("real features in %.1f s", time.perf_counter() - t0)
    if cache is not None:
        np.savez(cache, train=f_train.numpy(), test=f_test.numpy())
    return f_train, f_test


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generator", required=True, help="folder with generator_done.json and checkpoints/")
    parser.add_argument("--data", required=True, help="MedMNIST .npz or folder with train/valid/test splits")
    parser.add_argument("--configs", nargs="+", required=True, help='e.g. "w=2,steps=25,eta=1,mix=balanced"')
    parser.add_argument("--recipe", nargs="*", default=[], help="DiffusionRecipe overrides, key=value")
    parser.add_argument("--n", type=int, default=500, help="images per set (synthetic, real train, real test cap)")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--cache", default=None, help="npz cache of the real Inception features")
    parser.add_argument("--out", default="sampling_sweep.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    from monai_synth.apps.augmentation import DiffusionRecipe, load_generator
    from monai_synth.data import load_labelled_splits
    from monai_synth.metrics import InceptionFeatureExtractor, compute_fid

    gen_dir = Path(args.generator)
    summary = gen_dir.parent / "summary.json"
    base = json.loads(summary.read_text())["recipe"] if summary.is_file() else {}
    for pair in args.recipe:
        k, _, v = pair.partition("=")
        try:
            base[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            base[k] = v
    recipe = DiffusionRecipe(**base)
    data = Path(args.data)
    splits = load_labelled_splits("medmnist" if data.suffix == ".npz" else "folder", data, recipe.image_size)
    train_labels = np.array([int(it["label"]) for it in splits["train"]])
    num_classes = int(train_labels.max()) + 1
    gen = load_generator(gen_dir, recipe, num_classes)
    torch.manual_seed(0)

    extractor = InceptionFeatureExtractor(dims=2048)
    f_train, f_test = real_features(extractor, splits, args.n, Path(args.cache) if args.cache else None)
    fid_train_test = float(compute_fid(f_train, f_test))
    log.info("FID(real train, real test) at n=%d: %.2f", len(f_train), fid_train_test)

    from monai_synth.engines.generate import plan_class_counts

    prior = np.bincount(train_labels, minlength=num_classes)
    results = []
    for text in args.configs:
        cfg = parse_config(text)
        if cfg["mix"] == "balanced":
            counts = plan_class_counts(class_ratio=[1.0] * num_classes, total=args.n)
        else:
            counts = plan_class_counts(class_ratio=prior.tolist(), total=args.n)
        t0 = time.perf_counter()
        images = sample_set(gen, recipe, cfg, counts, args.seed, args.batch_size)
        sample_s = time.perf_counter() - t0
        f_syn = extractor(images)
        fid = float(compute_fid(f_syn, f_test))
        row = {
            **cfg,
            "n": int(len(images)),
            "counts": counts,
            "sample_s": sample_s,
            "img_per_s": len(images) / sample_s,
            "s_per_1000": 1000.0 * sample_s / len(images),
            "fid_synth_test": fid,
            "fid_synth_train": float(compute_fid(f_syn, f_train)),
            "fid_train_test": fid_train_test,
            "fid_ratio": fid / fid_train_test,
        }
        log.info("%s -> FID %.2f (ratio %.2f), %.1f s per 1000", text, fid, row["fid_ratio"], row["s_per_1000"])
        results.append(row)
        Path(args.out).write_text(json.dumps({"generator": str(gen_dir), "recipe": base, "results": results}, indent=1))
    return {"results": results}


if __name__ == "__main__":
    main()
