"""Synthetic-data utility against CPU minutes of generator training: one point per saved checkpoint.

Usage::

    python benchmarks/utility_curve.py --data PNEUMONIA.npz --recipe-from RUN/summary.json \\
        --checkpoint 5.1=ckpts/checkpoint_epoch00007.pt --checkpoint 10.2=ckpts/checkpoint_epoch00014.pt \\
        --out curve.json

Each ``--checkpoint MINUTES=PATH`` is a training checkpoint (EMA weights are used) and the wall-clock minutes of
training at which it was written. For every point the script samples ``--n`` class-balanced images with the
recipe's sampling settings, computes FID against the real test split (Inception 2048-d, on the first ``--fid-n``
synthetic images against ``--fid-n`` real test images, with real train-vs-test at the same size for the ratio), and
trains seed 000's synthetic-only ResNet-18 (Table 2 row 17) to report its real-test accuracy and ROC AUC. Every
classifier is an MLflow run (experiment ``synthetic_utility_curve``).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

log = logging.getLogger("utility_curve")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--recipe-from", required=True, help="summary.json of the run that trained the generator")
    parser.add_argument("--checkpoint", action="append", required=True, help="MINUTES=PATH (repeatable)")
    parser.add_argument("--n", type=int, default=1000, help="synthetic images (class-balanced)")
    parser.add_argument("--fid-n", type=int, default=500)
    parser.add_argument("--fid-cache", default=None, help="npz cache of the real Inception features")
    parser.add_argument("--classifier-epochs", type=int, default=20)
    parser.add_argument("--work-dir", default="./outputs/utility_curve")
    parser.add_argument("--out", default="utility_curve.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    from sampling_sweep import real_features, sample_set

    from monai_synth.apps.augmentation import DiffusionRecipe, GeneratorResult, table2_grid
    from monai_synth.data import items_from_arrays, load_labelled_splits
    from monai_synth.engines.classification import ClassifierRunConfig, train_classifier
    from monai_synth.engines.generate import plan_class_counts
    from monai_synth.handlers.checkpoint import load_checkpoint
    from monai_synth.handlers.ema import create_ema_model
    from monai_synth.metrics import InceptionFeatureExtractor, compute_fid

    recipe = DiffusionRecipe(**json.loads(Path(args.recipe_from).read_text())["recipe"])
    data = Path(args.data)
    splits = load_labelled_splits("medmnist" if data.suffix == ".npz" else "folder", data, recipe.image_size)
    num_classes = max(int(it["label"]) for it in splits["train"]) + 1
    extractor = InceptionFeatureExtractor(dims=2048)
    f_train, f_test = real_features(extractor, splits, args.fid_n, Path(args.fid_cache) if args.fid_cache else None)
    fid_train_test = float(compute_fid(f_train, f_test))
    row17 = next(c for c in table2_grid(ClassifierRunConfig(epochs=args.classifier_epochs)) if c.name == "t2_row17")
    cfg = {"w": recipe.guidance_scale, "steps": recipe.sample_steps, "eta": recipe.sample_eta}
    counts = plan_class_counts(class_ratio=[1.0] * num_classes, total=args.n)

    points = []
    for spec in args.checkpoint:
        minutes, _, path = spec.partition("=")
        network, scheduler = recipe.build_network(num_classes), recipe.build_scheduler()
        ema = create_ema_model(network, decay=recipe.ema_decay)
        state = load_checkpoint(path, network=network, ema_model=ema, restore_rng=False)
        gen = GeneratorResult(
            model=ema.module.eval(), scheduler=scheduler, num_classes=num_classes, checkpoint_dir=str(Path(path).parent),  # noqa: E501
            epochs=int((state.get("trainer") or {}).get("epoch", -1)), iterations=-1, wall_s=float(minutes) * 60,
            img_per_s=float("nan"), final_loss=float("nan"), history={},
        )  # fmt: skip
        t0 = time.perf_counter()
        images = sample_set(gen, recipe, cfg, counts, seed=1234, batch_size=100)
        sample_s = time.perf_counter() - t0
        f_syn = extractor(images[torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[: args.fid_n]])
        fid = float(compute_fid(f_syn, f_test))
        labels = [c for c, n in enumerate(counts) for _ in range(n)]
        result = train_classifier(
            row17.replace(name=f"curve_{Path(path).stem}"),
            None,
            splits["val"],
            splits["test"],
            synthetic_data=items_from_arrays(images, labels),
            output_dir=Path(args.work_dir),
            experiment_name="synthetic_utility_curve",
            extra_params={"generator_checkpoint": Path(path).name, "generator_train_minutes": float(minutes)},
        )
        point = {
            "checkpoint": Path(path).name,
            "train_minutes": float(minutes),
            "sample_s": sample_s,
            "fid_synth_test": fid,
            "fid_train_test": fid_train_test,
            "fid_ratio": fid / fid_train_test,
            "fid_n": int(len(f_syn)),
            "epoch": gen.epochs,
            "synthetic_only_acc": float(result.test_metrics["accuracy"]),
            "synthetic_only_auc": float(result.test_metrics["auc"]),
        }
        log.info("%s", point)
        points.append(point)
        Path(args.out).write_text(json.dumps({"recipe": recipe.__dict__, "sampling": cfg, "points": points}, indent=1))
    return {"points": points}


if __name__ == "__main__":
    main()
