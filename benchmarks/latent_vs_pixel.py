"""Training throughput of latent against pixel-space diffusion at equal UNet channels, side by side -> JSON.

Usage::

    python benchmarks/latent_vs_pixel.py --data ../shared/data/kermany_cxr224 --image-size 128 --out latent_tp.json

Both arms run the real trainer (:func:`monai_synth.engines.build_diffusion_trainer`) with the default
:class:`~monai_synth.engines.DiffusionRecipe` UNet (same channels, attention levels and batch size); the pixel arm
trains on ``image_size`` images, the latent arm on the latents of the recipe's autoencoder (untrained weights: the
cost of a step does not depend on them). Arms alternate ``--rounds`` times and the median of the per-round ratios is
reported, so drift of the machine's speed cancels. The autoencoder's own training speed and the cost of encoding the
training set once are measured too: they are the latent arm's overhead.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch


def _unet_img_per_s(recipe, images: torch.Tensor, labels: torch.Tensor, iters: int) -> float:
    from monai_synth.engines import build_diffusion_trainer

    data = [{"image": images[i], "label": labels[i]} for i in range(images.shape[0])]
    loader = torch.utils.data.DataLoader(data, batch_size=recipe.batch_size, shuffle=True, drop_last=True)
    net = recipe.build_network(2, in_channels=int(images.shape[1]))
    trainer = build_diffusion_trainer(
        net, recipe.build_scheduler(), loader, max_epochs=1, num_classes=2, ema_decay=recipe.ema_decay,
        checkpoint_dir=None, progress=False, decollate=False,
    )  # fmt: skip
    marks = _timed(trainer, iters)
    return recipe.batch_size * iters / (marks[-1] - marks[0])  # the first iteration (warm-up) is not counted


def _timed(trainer, iters: int) -> list[float]:
    """Run ``trainer`` for ``iters + 1`` iterations; the times at which each one completed."""
    from ignite.engine import Events

    marks: list[float] = []

    def mark(engine) -> None:
        marks.append(time.perf_counter())
        if len(marks) == iters + 1:
            engine.terminate()

    trainer.add_event_handler(Events.ITERATION_COMPLETED, mark)
    trainer.run()
    return marks


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a folder data source (train/test class folders) or .npz")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--iters", type=int, default=6, help="timed iterations per arm and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work-dir", default="./outputs/latent_vs_pixel")
    parser.add_argument("--out", default="latent_vs_pixel.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from monai_synth.data import load_labelled_splits
    from monai_synth.data.ranges import from_unit_range
    from monai_synth.engines import DiffusionRecipe
    from monai_synth.networks import encode_latents

    source = "medmnist" if str(args.data).endswith(".npz") else "folder"
    splits = load_labelled_splits(source, args.data, image_size=args.image_size, work_dir=args.work_dir)
    train = splits["train"]
    latent = DiffusionRecipe(image_size=args.image_size, generator_kind="latent")
    pixel = DiffusionRecipe(  # equal UNet, objective and batch: only the space the UNet works in differs
        image_size=args.image_size, generator_kind="pixel", channels=latent.channels, batch_size=latent.batch_size,
        prediction_type=latent.prediction_type, lr_anneal_fraction=latent.lr_anneal_fraction,
    )
    n = min(len(train), latent.batch_size * (args.iters + 1))
    images = from_unit_range(torch.stack([torch.as_tensor(it["image"]) for it in train[:n]]).float())
    labels = torch.tensor([int(it["label"]) for it in train[:n]])
    autoencoder = latent.autoencoder.build_network(args.image_size).eval()

    t0 = time.perf_counter()
    z = encode_latents(autoencoder, images, 1.0, batch_size=32)
    encode_img_per_s = n / (time.perf_counter() - t0)
    rounds = []
    for _ in range(args.rounds):
        p = _unet_img_per_s(pixel, images, labels, args.iters)
        q = _unet_img_per_s(latent, z, labels, args.iters)
        rounds.append({"pixel_img_per_s": p, "latent_img_per_s": q, "ratio": q / p})
    ae_tp = _autoencoder_img_per_s(latent, images, args.iters)
    out = {
        "data": str(args.data),
        "image_size": args.image_size,
        "latent_shape": list(z.shape[1:]),
        "unet_channels": list(pixel.channels),
        "attention_levels": list(pixel.attention_levels),
        "batch_size": pixel.batch_size,
        "threads": args.threads,
        "rounds": rounds,
        "pixel_img_per_s": statistics.median(r["pixel_img_per_s"] for r in rounds),
        "latent_img_per_s": statistics.median(r["latent_img_per_s"] for r in rounds),
        "ratio": statistics.median(r["ratio"] for r in rounds),
        "autoencoder_train_img_per_s": ae_tp,
        "encode_img_per_s": encode_img_per_s,
        "torch": torch.__version__,
    }
    out["target_ratio>=4"] = out["ratio"] >= 4.0
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps({k: v for k, v in out.items() if k != "rounds"}, indent=1))
    return out


def _autoencoder_img_per_s(recipe, images: torch.Tensor, iters: int) -> float:
    from monai_synth.engines import build_autoencoder_trainer
    from monai_synth.networks import build_patch_discriminator

    ae = recipe.autoencoder
    data = [{"image": images[i]} for i in range(images.shape[0])]
    loader = torch.utils.data.DataLoader(data, batch_size=ae.batch_size, shuffle=True, drop_last=True)
    trainer = build_autoencoder_trainer(
        ae.build_network(recipe.image_size), loader, max_epochs=1, discriminator=build_patch_discriminator(1),
        adv_weight=ae.adv_weight, adv_start_iters=0, ema_decay=ae.ema_decay,
    )  # fmt: skip
    marks = _timed(trainer, iters)
    return ae.batch_size * iters / (marks[-1] - marks[0])


if __name__ == "__main__":
    main()
