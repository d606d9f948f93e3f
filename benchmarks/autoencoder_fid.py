"""How far the first stage alone caps a latent generator: FID of autoencoder reconstructions against real test -> JSON.

Usage::

    python benchmarks/autoencoder_fid.py --data ../shared/data/kermany_cxr224 --image-size 128 \\
        --generator-dir outputs/utility/generator --out autoencoder_fid.json

Loads the finished autoencoder of a latent generator (``<generator-dir>/autoencoder``, as ``utility.py`` writes it),
reconstructs up to ``--n`` train images ``D(mu(x))`` and reports FID(reconstructed train, test) beside FID(real
train, test) (Inception 2048-d, the same sets and sizes). A latent generator cannot get below the first figure:
if it is close to the synthetic set's FID, the autoencoder is the bottleneck; if far below, the UNet is.
With ``--train-minutes M`` and no finished autoencoder in ``<generator-dir>/autoencoder``, one is trained first with
the default recipe for ``M`` minutes (how the cap falls with the first stage's budget).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a folder source or a MedMNIST .npz")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--generator-dir", required=True)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--train-minutes", type=float, default=None, help="train an autoencoder first when none")
    parser.add_argument("--work-dir", default="./outputs/autoencoder_fid")
    parser.add_argument("--out", default="autoencoder_fid.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)

    from monai_synth.apps.augmentation.autoencoder import (
        AUTOENCODER_DONE,
        load_autoencoder,
        reconstruction_report,
        train_autoencoder,
    )
    from monai_synth.data import load_labelled_splits
    from monai_synth.data.ranges import from_unit_range, to_unit_range
    from monai_synth.engines import DiffusionRecipe
    from monai_synth.metrics import InceptionFeatureExtractor, compute_fid
    from monai_synth.networks import decode_latents, encode_latents

    source = "medmnist" if str(args.data).endswith(".npz") else "folder"
    splits = load_labelled_splits(source, args.data, image_size=args.image_size, work_dir=args.work_dir)
    ae_dir, recipe = Path(args.generator_dir) / "autoencoder", DiffusionRecipe(image_size=args.image_size)
    if args.train_minutes is not None and not (ae_dir / AUTOENCODER_DONE).is_file():
        recipe.autoencoder.epochs = 1000  # the budget decides
        train_autoencoder(splits["train"], recipe, ae_dir, minutes=args.train_minutes)
    ae = load_autoencoder(ae_dir, recipe)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(splits["train"]))[: args.n]
    train = torch.stack([torch.as_tensor(splits["train"][i]["image"]) for i in idx]).float()
    test = torch.stack([torch.as_tensor(it["image"]) for it in splits["test"][: args.n]]).float()
    recon = torch.as_tensor(to_unit_range(decode_latents(ae.model, encode_latents(ae.model, from_unit_range(train)))))
    extractor = InceptionFeatureExtractor(dims=2048)
    f_train, f_test, f_recon = extractor(train), extractor(test), extractor(recon)
    out = {
        "data": str(args.data),
        "image_size": args.image_size,
        "generator_dir": str(args.generator_dir),
        "n_train": len(idx),
        "n_test": int(test.shape[0]),
        "autoencoder": {"epochs": ae.epochs, "iterations": ae.iterations, "wall_s": ae.wall_s,
                        "scale_factor": ae.scale_factor},  # fmt: skip
        "fid_train_test": float(compute_fid(f_train, f_test)),
        "fid_reconstructed_train_test": float(compute_fid(f_recon, f_test)),
        "fid_reconstructed_train_train": float(compute_fid(f_recon, f_train)),
        "reconstruction_test": reconstruction_report(ae.model, splits["test"][:500]),
    }
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
