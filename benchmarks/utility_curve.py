"""Synthetic-data utility against CPU minutes of generator training: one point per saved checkpoint.

Usage (train here, one curve per training objective)::

    python benchmarks/utility_curve.py --data PNEUMONIA.npz --train-minutes 15 --marks 5,10 \\
        --recipe prediction_type=v_prediction snr_gamma=5.0 --work-dir outputs/curve_v --out curve_v.json

or on checkpoints of an earlier run::

    python benchmarks/utility_curve.py --data PNEUMONIA.npz --recipe-from RUN/summary.json \\
        --checkpoint 5.1=ckpts/checkpoint_epoch00007.pt --checkpoint 10.2=ckpts/checkpoint_epoch00014.pt \\
        --out curve.json

With ``--train-minutes`` the generator is trained with the default recipe (``--recipe key=value`` overrides, as in
``utility.py``) in ``--work-dir/generator``; a :class:`~monai_synth.handlers.MinuteSnapshotSaver` keeps the first
checkpoint after each of ``--marks`` minutes and the end of training is the last point (a second call reuses the
finished generator and its snapshots). Each ``--checkpoint MINUTES=PATH`` is a training checkpoint (EMA weights are
used) and the wall-clock minutes of training at which it was written. For every point the script samples ``--n``
class-balanced images with the recipe's default sampler (``sampler``, ``sample_steps``, ``guidance_scale``),
computes FID against the real test split (Inception ``--fid-dims``, default 2048-d, on the first ``--fid-n``
synthetic images against ``--fid-n`` real test images, with real train-vs-test at the same size for the ratio), and
trains seed 000's synthetic-only ResNet-18 (Table 2 row 17) to report its real-test accuracy and ROC AUC. Every
classifier is an MLflow run (experiment ``synthetic_utility_curve``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

import torch
from utility import _parse_recipe

log = logging.getLogger("utility_curve")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--recipe-from", default=None, help="summary.json of the run that trained the generator")
    parser.add_argument("--checkpoint", action="append", default=[], help="MINUTES=PATH (repeatable)")
    parser.add_argument("--train-minutes", type=float, default=None, help="train a generator here for M minutes")
    parser.add_argument("--max-epochs", type=int, default=200, help="with --train-minutes: epoch cap")
    parser.add_argument("--marks", default="5,10", help="with --train-minutes: snapshot minutes, comma-separated")
    parser.add_argument("--recipe", nargs="*", default=[], help="with --train-minutes: recipe overrides, key=value")
    parser.add_argument("--n", type=int, default=1000, help="synthetic images (class-balanced)")
    parser.add_argument("--fid-n", type=int, default=500)
    parser.add_argument("--fid-dims", type=int, default=2048, choices=(64, 192, 768, 2048), help="Inception tap")
    parser.add_argument("--fid-cache", default=None, help="npz cache of the real Inception features")
    parser.add_argument("--classifier-epochs", type=int, default=20)
    parser.add_argument("--work-dir", default="./outputs/utility_curve")
    parser.add_argument("--out", default="utility_curve.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    from sampler_quality import sample_images, settings
    from sampling_sweep import real_features

    from monai_synth.apps.augmentation import DiffusionRecipe, GeneratorResult, table2_grid
    from monai_synth.data import items_from_arrays, load_labelled_splits
    from monai_synth.engines.classification import ClassifierRunConfig, train_classifier
    from monai_synth.engines.generate import plan_class_counts
    from monai_synth.handlers.checkpoint import load_checkpoint
    from monai_synth.handlers.ema import create_ema_model
    from monai_synth.metrics import InceptionFeatureExtractor, compute_fid

    if (args.train_minutes is None) == (args.recipe_from is None):
        parser.error("give either --train-minutes (train here) or --recipe-from with --checkpoint (earlier run)")
    if args.recipe_from is not None and not args.checkpoint:
        parser.error("--recipe-from needs at least one --checkpoint MINUTES=PATH")
    if args.train_minutes is not None:
        recipe = DiffusionRecipe(epochs=args.max_epochs, train_minutes=args.train_minutes, **_parse_recipe(args.recipe))
    else:
        recipe = DiffusionRecipe(**json.loads(Path(args.recipe_from).read_text())["recipe"])
    data = Path(args.data)
    splits = load_labelled_splits("medmnist" if data.suffix == ".npz" else "folder", data, recipe.image_size)
    num_classes = max(int(it["label"]) for it in splits["train"]) + 1
    checkpoints = list(args.checkpoint)
    if args.train_minutes is not None:
        checkpoints = train_with_snapshots(splits["train"], recipe, num_classes, Path(args.work_dir), args.marks)
    extractor = InceptionFeatureExtractor(dims=args.fid_dims)
    f_train, f_test = real_features(extractor, splits, args.fid_n, Path(args.fid_cache) if args.fid_cache else None)
    fid_train_test = float(compute_fid(f_train, f_test))
    row17 = next(c for c in table2_grid(ClassifierRunConfig(epochs=args.classifier_epochs)) if c.name == "t2_row17")
    cfg = settings(recipe, recipe.guidance_scale)["default"]
    counts = plan_class_counts(class_ratio=[1.0] * num_classes, total=args.n)

    points = []
    for spec in checkpoints:
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
        images, nfe = sample_images(gen, recipe, cfg, counts, seed=1234, batch=100)
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
            "nfe": nfe,
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
        out = {"objective": objective_name(recipe), "recipe": dataclasses.asdict(recipe), "sampling": cfg,
               "points": points}  # fmt: skip
        Path(args.out).write_text(json.dumps(out, indent=1, default=str))
    return {"points": points}


def objective_name(recipe) -> str:
    """``epsilon``, ``v_prediction``, ``flow``, with ``+min_snr_<gamma>`` when the loss is min-SNR weighted."""
    name = recipe.prediction_type
    return name if recipe.snr_gamma is None else f"{name}+min_snr_{recipe.snr_gamma:g}"


def train_with_snapshots(train_items, recipe, num_classes: int, work_dir: Path, marks: str) -> list[str]:
    """Train (or reuse) the generator in ``work_dir/generator`` with snapshots at ``marks`` minutes; returns the
    ``MINUTES=PATH`` specs of the snapshots and of the final checkpoint."""
    from monai_synth.apps.augmentation import GENERATOR_DONE, train_generator
    from monai_synth.handlers import MinuteSnapshotSaver, latest_checkpoint

    gen_dir = work_dir / "generator"
    snap_dir = gen_dir / "snapshots"
    minutes = [float(m) for m in marks.split(",") if m.strip()]
    if any(m >= recipe.train_minutes for m in minutes):
        raise SystemExit(f"--marks {marks!r} must lie below --train-minutes {recipe.train_minutes:g}")
    if not (gen_dir / GENERATOR_DONE).is_file():
        if snap_dir.is_dir():  # an interrupted run: its snapshots' clock would restart at the resume
            for old in snap_dir.glob("snapshot_*min.pt"):
                old.unlink()
        saver = MinuteSnapshotSaver(snap_dir, minutes)
        train_generator(train_items, recipe, gen_dir, num_classes=num_classes, train_handlers=[saver])
    done = json.loads((gen_dir / GENERATOR_DONE).read_text())
    specs = [f"{float(p.stem.split('_')[1][:-3]):.4f}={p}" for p in sorted(snap_dir.glob("snapshot_*min.pt"))]
    return [*specs, f"{done['wall_s'] / 60.0:.4f}={latest_checkpoint(gen_dir / 'checkpoints')}"]


if __name__ == "__main__":
    main()
