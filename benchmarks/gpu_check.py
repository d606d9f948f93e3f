"""The GPU path in one short run: latent diffusion at 256 px on kermany_cxr224 -> img/s, sampling time, memory, FID.

Usage (``benchmarks/gpu_check.sh`` runs this with the issue's settings)::

    python benchmarks/gpu_check.py --data ../shared/data/kermany_cxr224 --image-size 256 --minutes 4 \\
        --n 1000 --device cuda --out gpu_check.json

Trains the default latent recipe (autoencoder, then the class-conditional UNet, mixed precision on CUDA: bf16 where
supported, fp16 otherwise; optional ``--compile`` and ``--channels-last``) under ``--minutes`` in all, samples
``--n`` class-balanced images with the recipe's sampler (DDIM 50), and computes FID (Inception 2048-d) against the
real test split. The JSON holds training img/s of both stages, sampling seconds for the ``--n`` images, peak GPU
memory and FID. ``--device cpu`` with small settings checks the script itself (the test suite does).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a folder source (train/test class folders, labels.csv)")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--minutes", type=float, default=4.0, help="training budget of both stages together")
    parser.add_argument("--n", type=int, default=1000, help="images to sample (class-balanced)")
    parser.add_argument("--batch-size", type=int, default=250, help="images per sampling pass")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--recipe", nargs="*", default=[], help="DiffusionRecipe overrides key=value (as utility.py)")
    parser.add_argument("--no-fid", action="store_true")
    parser.add_argument("--work-dir", default="./outputs/gpu_check")
    parser.add_argument("--out", default="gpu_check.json")
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> dict:
    """The check itself (``main`` parses the command line)."""
    from monai.utils import set_determinism

    from monai_synth.apps.augmentation import synthesize, train_generator
    from monai_synth.data import load_labelled_splits
    from monai_synth.engines import DiffusionRecipe
    from monai_synth.metrics import InceptionFeatureExtractor, compute_fid

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    set_determinism(seed=0)
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats(device)
    work = Path(args.work_dir)
    t0 = time.perf_counter()
    splits = load_labelled_splits("folder", args.data, image_size=args.image_size, work_dir=work)
    load_s = time.perf_counter() - t0
    from utility import _parse_recipe  # the benchmarks' one key=value parser (benchmarks/ is on sys.path)

    overrides = _parse_recipe(args.recipe)
    recipe = DiffusionRecipe(**{"image_size": args.image_size, "train_minutes": args.minutes, "epochs": 1000,
                                **overrides})  # fmt: skip
    t0 = time.perf_counter()
    gen = train_generator(splits["train"], recipe, work / "generator", device=device, amp=True, compile=args.compile)
    train_s = time.perf_counter() - t0
    n_per_class = max(1, args.n // gen.num_classes)
    if cuda:
        torch.cuda.synchronize(device)
    synthetic, sample_s = synthesize(gen, n_per_class, work / "synthetic", recipe, batch_size=args.batch_size,
                                     device=device)  # fmt: skip
    out = {
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "torch": torch.__version__,
        "image_size": args.image_size,
        "generator_kind": gen.generator_kind,
        "latent_size": recipe.latent_size,
        "data_load_s": load_s,
        "train_s": train_s,
        "autoencoder_img_per_s": gen.autoencoder_stats.get("img_per_s"),
        "unet_img_per_s": gen.img_per_s,
        "unet_epochs": gen.epochs,
        "n_sampled": len(synthetic),
        "sampling_s": sample_s,
        "sampler": recipe.sampler,
        "sample_steps": recipe.sample_steps,
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None,
        "target_1000_images_under_60s": sample_s * 1000.0 / max(len(synthetic), 1) < 60.0,
    }
    if not args.no_fid:
        extractor = InceptionFeatureExtractor(dims=2048, device=device)
        rng = np.random.default_rng(0)

        def feats(items):
            idx = rng.permutation(len(items))[: args.n]
            return extractor(torch.stack([torch.as_tensor(items[i]["image"]) for i in idx]).float())

        f_test, f_train, f_syn = feats(splits["test"]), feats(splits["train"]), feats(synthetic)
        out["fid_synth_test"] = float(compute_fid(f_syn, f_test))
        out["fid_train_test"] = float(compute_fid(f_train, f_test))
        out["fid_ratio"] = out["fid_synth_test"] / out["fid_train_test"]
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
