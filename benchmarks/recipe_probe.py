"""One generator, several read-outs: FID of its weight averages and of sampler settings, side by side.

Usage::

    python benchmarks/recipe_probe.py --data ../shared/data/pneumoniamnist/pneumoniamnist_reconstructed.npz \\
        --train-minutes 10 --work-dir runs/probe --out probe.json \\
        --recipe prediction_type=flow sampler=sde_dpmpp_2m sample_steps=15 loss=l2 batch_size=32 \\
        --ema-decays 0.99 0.995 --settings sde_dpmpp_2m:15 sde_dpmpp_2m:15:shift=0.5 sde_dpmpp_2m:15:w=1.5

A cheaper question than ``utility.py`` asks: which of several read-outs of one training run is best. The generator
trains once under ``--recipe`` for ``--train-minutes`` (the ``utility.py`` recipe syntax), keeping, besides the
recipe's EMA, one EMA per ``--ema-decays`` entry and the raw weights (all saved to ``--work-dir`` atomically, so a
second call reuses them). Then every weight set samples ``--n`` class-balanced images with the recipe's sampler, and
the recipe's EMA samples every ``--settings`` entry (``sampler:steps[:w=W][:shift=S]``); each gets FID (Inception
2048-d) against the whole real test set, computed once. No classifiers run: for those use ``utility.py``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

log = logging.getLogger("recipe_probe")


def parse_setting(text: str) -> dict:
    """``sampler:steps[:w=W][:shift=S]`` -> a ``sampler_quality.sample_images`` setting.

    Raises:
        SystemExit: naming the malformed entry.
    """
    parts = text.split(":")
    if len(parts) < 2 or not parts[1].isdigit():
        raise SystemExit(f"--settings expects sampler:steps[:w=W][:shift=S], got {text!r}")
    out = {"sampler": parts[0], "steps": int(parts[1]), "w": 1.0, "interval": None}
    for extra in parts[2:]:
        key, _, value = extra.partition("=")
        if key not in ("w", "shift") or not _:
            raise SystemExit(f"--settings {text!r}: unknown option {extra!r} (w=W or shift=S)")
        try:
            out[key] = float(value)
        except ValueError:
            raise SystemExit(f"--settings {text!r}: {key} must be a number, got {value!r}") from None
    return out


class ExtraAverages:
    """Keeps an EMA per decay and a handle on the raw network during training (an Ignite handler)."""

    def __init__(self, decays: list[float]) -> None:
        self.decays, self.emas, self.network = list(decays), {}, None

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine) -> None:
        from monai_synth.handlers.ema import create_ema_model, unwrap_model

        if self.network is None:
            self.network = unwrap_model(engine.network)
            self.emas = {d: create_ema_model(self.network, decay=d) for d in self.decays}
        for ema in self.emas.values():
            ema.update_parameters(self.network)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="MedMNIST .npz or a train/[valid/]test folder")
    parser.add_argument("--train-minutes", type=float, default=10.0)
    parser.add_argument("--work-dir", required=True, help="generator and extra weights (reused when finished)")
    parser.add_argument("--out", required=True, help="result JSON")
    parser.add_argument("--recipe", nargs="*", default=[], help="DiffusionRecipe overrides, key=value")
    parser.add_argument("--ema-decays", type=float, nargs="*", default=[], help="extra EMA decays to compare")
    parser.add_argument("--settings", nargs="*", default=[], help="sampler:steps[:w=W][:shift=S] on the EMA")
    parser.add_argument("--n", type=int, default=1000, help="synthetic images per read-out (class-balanced)")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = {s: parse_setting(s) for s in args.settings}
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from sampler_quality import _write_json, sample_images
    from utility import _parse_recipe

    from monai_synth.apps.augmentation import GENERATOR_DONE, DiffusionRecipe, load_generator, train_generator
    from monai_synth.data import load_labelled_splits
    from monai_synth.engines.generate import plan_class_counts
    from monai_synth.evaluate import stack_items
    from monai_synth.metrics import InceptionFeatureExtractor, compute_fid
    from monai_synth.utils.io import atomic_path

    overrides = _parse_recipe(args.recipe)
    recipe = DiffusionRecipe(**{"train_minutes": args.train_minutes, "epochs": 10_000, **overrides})
    if recipe.is_latent:
        raise SystemExit("recipe_probe compares pixel-space generators; use utility.py for latent ones.")
    data = Path(args.data)
    splits = load_labelled_splits("medmnist" if data.suffix == ".npz" else "folder", data, recipe.image_size)
    num_classes = max(int(it["label"]) for it in splits["train"]) + 1
    gen_dir, extra_file = Path(args.work_dir) / "generator", Path(args.work_dir) / "extra_weights.pt"
    if (gen_dir / GENERATOR_DONE).is_file():
        gen = load_generator(gen_dir, recipe, num_classes)
    else:
        extra = ExtraAverages(args.ema_decays)
        gen = train_generator(splits["train"], recipe, gen_dir, num_classes=num_classes, progress=False,
                              train_handlers=[extra])  # fmt: skip
        weights = {f"ema{d}": m.module.state_dict() for d, m in extra.emas.items()}
        weights["raw"] = extra.network.state_dict()
        with atomic_path(extra_file) as tmp:
            torch.save(weights, tmp)
    weights = torch.load(extra_file, map_location="cpu") if extra_file.is_file() else {}
    extractor = InceptionFeatureExtractor(dims=2048)
    f_test = extractor(stack_items(splits["test"]))
    counts = plan_class_counts(class_ratio=[1.0] * num_classes, total=args.n)
    default = {"sampler": recipe.sampler, "steps": recipe.sample_steps, "w": recipe.guidance_scale,
               "interval": None, "shift": recipe.timestep_shift}  # fmt: skip
    ema_model = gen.model
    result = {"data": str(data), "train_minutes": args.train_minutes, "generator_epochs": gen.epochs,
              "generator_iterations": gen.iterations, "n": args.n, "n_test": len(splits["test"]),
              "recipe": {k: str(v) for k, v in overrides.items()}, "ema_decay": recipe.ema_decay,
              "weights": {}, "settings": {}}  # fmt: skip

    def fid_of(model, setting) -> dict:
        gen.model = model
        t0 = time.perf_counter()
        with torch.no_grad():
            images, nfe = sample_images(gen, recipe, setting, counts, args.seed, 100)
        seconds = time.perf_counter() - t0
        return {**setting, "nfe": nfe, "seconds": seconds, "fid": float(compute_fid(extractor(images), f_test))}

    result["weights"][f"ema{recipe.ema_decay}"] = fid_of(ema_model, default)
    for name, state in weights.items():
        model = recipe.build_network(num_classes, in_channels=int(stack_items(splits["test"][:1]).shape[1]))
        model.load_state_dict(state)
        result["weights"][name] = fid_of(model.eval(), default)
        log.info("%-12s FID %.2f", name, result["weights"][name]["fid"])
        _write_json(result, args.out)
    for name, setting in settings.items():
        result["settings"][name] = fid_of(ema_model, setting)
        log.info("%-28s FID %.2f", name, result["settings"][name]["fid"])
        _write_json(result, args.out)
    _write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
