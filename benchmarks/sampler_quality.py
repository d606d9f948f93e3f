"""Sampler quality against cost on one trained generator: FID, network evaluations and CPU seconds per sampler.

Usage::

    python benchmarks/sampler_quality.py --data ../shared/data/pneumoniamnist/pneumoniamnist.npz \\
        --train-minutes 10 --work-dir runs/sampler_quality --out benchmarks/results/sampler_quality.json

Trains a generator with the default :class:`~monai_synth.engines.DiffusionRecipe` for ``--train-minutes`` (or reuses
the finished one in ``--work-dir/generator``), then, on that one checkpoint and in one process, samples ``--n``
class-balanced images per sampler setting and computes FID (Inception 2048-d) against the real test set. Settings
run one after another with the same seeds, so their seconds are side by side. The JSON holds
``samplers.<name>.{seconds_per_1000, fid, nfe, ...}``; ``ddim50`` (DDIM 50 steps at the recipe's eta, no CFG),
``default`` (the recipe's sampler), ``cfg_ddim50`` (DDIM 50 with CFG at ``--cfg-scale``) and the fast CFG settings
``cfg_<sampler>_<steps>`` are always present; ``targets`` evaluates the issue's speed/quality targets.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger("sampler_quality")

# name -> (sampler, steps, guidance scale key ("none" or "cfg"), guidance interval or None)
FAST = [("dpmpp_2m", 10), ("dpmpp_2m", 15), ("dpmpp_2m", 20), ("dpmpp_3m", 15), ("unipc_2", 10), ("unipc_2", 15),
        ("ddim", 15), ("ddim", 20), ("sde_dpmpp_2m", 10), ("sde_dpmpp_2m", 15), ("sde_dpmpp_2m", 20)]  # fmt: skip
CFG_FAST = [("dpmpp_2m", 15), ("unipc_2", 15), ("dpmpp_2m", 20), ("sde_dpmpp_2m", 15), ("sde_dpmpp_2m", 20)]
# a rectified-flow generator (prediction_type flow): MONAI's Euler sampler (rflow) and the solvers on the flow path
FLOW_FAST = [("rflow", 10), ("rflow", 15), ("rflow", 20), ("dpmpp_2m", 10), ("dpmpp_2m", 15), ("dpmpp_3m", 15),
             ("unipc_2", 15), ("sde_dpmpp_2m", 10), ("sde_dpmpp_2m", 15), ("sde_dpmpp_2m", 20)]  # fmt: skip
FLOW_CFG_FAST = [("rflow", 15), ("dpmpp_2m", 15), ("sde_dpmpp_2m", 15)]
QUICK = ["dpmpp_2m_10", "dpmpp_2m_15", "unipc_2_15", "cfg_dpmpp_2m_15", "cfg_unipc_2_15", "cfg_interval_dpmpp_2m_15"]
INTERVAL = (0.28, 5.42)  # sigma interval of Kynkaanniemi et al. 2024 (EDM2), in EDM sigma units


def settings(recipe, cfg_scale: float) -> dict[str, dict]:
    """Every sampler setting of the benchmark, by name.

    For a rectified-flow generator (``prediction_type="flow"``) the 50-step references ``ddim50`` / ``cfg_ddim50``
    are MONAI's Euler sampler (``rflow``), which is DDIM with eta = 0 written on the flow path (its step is the
    first-order solver update, :mod:`monai_synth.networks.schedulers.multistep`); the fast settings are Euler with
    fewer steps and the multistep solvers on the flow path."""
    flow = recipe.prediction_type == "flow"
    ref = "rflow" if flow else "ddim"
    out = {
        "ddim50": {"sampler": ref, "steps": 50, "w": 1.0, "interval": None},
        "cfg_ddim50": {"sampler": ref, "steps": 50, "w": cfg_scale, "interval": None},
    }
    if not flow:  # the deterministic reference: the probability-flow ODE that dpmpp_*/unipc_* solve, 50 DDIM steps
        out["ddim50_eta0"] = {"sampler": "ddim", "steps": 50, "w": 1.0, "interval": None, "eta": 0.0}
    for sampler, steps in FLOW_FAST if flow else FAST:
        out[f"{sampler}_{steps}"] = {"sampler": sampler, "steps": steps, "w": 1.0, "interval": None}
    for sampler, steps in FLOW_CFG_FAST if flow else CFG_FAST:
        out[f"cfg_{sampler}_{steps}"] = {"sampler": sampler, "steps": steps, "w": cfg_scale, "interval": None}
        out[f"cfg_interval_{sampler}_{steps}"] = {"sampler": sampler, "steps": steps, "w": cfg_scale,
                                                  "interval": INTERVAL}  # fmt: skip
    out["default"] = {"sampler": recipe.sampler, "steps": recipe.sample_steps, "w": recipe.guidance_scale,
                      "interval": None if recipe.guidance_interval is None else tuple(recipe.guidance_interval)}
    if recipe.timestep_shift != 1.0:  # the recipe's shifted grid (Esser et al. 2024, Eq. 23), with and without CFG
        out["default"]["shift"] = recipe.timestep_shift
        out[f"cfg_{recipe.sampler}_{recipe.sample_steps}_shift"] = {
            "sampler": recipe.sampler, "steps": recipe.sample_steps, "w": cfg_scale, "interval": None,
            "shift": recipe.timestep_shift}  # fmt: skip
    return out


def _write_json(obj: dict, path: str | Path) -> None:
    """Write ``obj`` as JSON atomically (a killed run leaves the last complete table)."""
    from monai_synth.utils.io import atomic_path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1))


def setting_eta(setting: dict, recipe) -> float:
    """The DDIM eta a setting samples with: its own ``eta``, else the recipe's; 0 for the other samplers."""
    return float(setting.get("eta", recipe.sample_eta)) if setting["sampler"] == "ddim" else 0.0


def solver_eta(setting: dict, recipe) -> float:
    """The SDE solver's eta of a setting: its own ``eta``, else the recipe's; 1 (unused) for the other samplers."""
    return float(setting.get("eta", recipe.sample_eta)) if setting["sampler"] == "sde_dpmpp_2m" else 1.0


def sample_images(gen, recipe, setting: dict, counts: list[int], seed: int, batch: int) -> tuple[torch.Tensor, int]:
    """``sum(counts)`` images in [0, 1] (labels in class order) and the number of network evaluations per image.

    ``setting``: ``sampler``, ``steps``, ``w`` (CFG weight), ``interval`` (guidance interval or ``None``),
    optionally ``shift`` (the multistep solvers' ``timestep_shift``, default 1) and, for DDIM and the SDE solver,
    optionally ``eta`` (default: the recipe's) and ``clip`` (clip the predicted ``x_0`` to [-1, 1]; default
    ``True``, as the recipe samples)."""
    from monai_synth.inferers.sampling import in_guidance_interval, sample
    from monai_synth.networks.schedulers import sampler_from

    sched = sampler_from(gen.scheduler, setting["sampler"], clip_sample=setting.get("clip", True),
                         timestep_shift=setting.get("shift", 1.0), eta=solver_eta(setting, recipe))  # fmt: skip
    sched.set_timesteps(setting["steps"])
    cfg = setting["w"] != 1.0
    nfe = sum(2 if cfg and in_guidance_interval(sched, int(t), setting["interval"]) else 1 for t in sched.timesteps)
    eta = setting_eta(setting, recipe)
    labels = torch.cat([torch.full((n,), c, dtype=torch.long) for c, n in enumerate(counts)])
    g = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, len(labels), batch):
        lab = labels[start : start + batch]
        size = (len(lab), 1, recipe.image_size, recipe.image_size)
        x = sample(gen.model, sched, shape=size, class_labels=lab, guidance_scale=setting["w"], generator=g, eta=eta,
                   guidance_interval=setting["interval"])  # fmt: skip
        out.append(((x.clamp(-1, 1) + 1) / 2).float())
    return torch.cat(out), nfe


def generator_for(args, recipe, splits):
    """The generator finished in ``work_dir/generator``, else a new one trained for ``--train-minutes``."""
    from monai_synth.apps.augmentation import GENERATOR_DONE, load_generator, train_generator

    gen_dir = Path(args.work_dir) / "generator"
    num_classes = max(int(it["label"]) for it in splits["train"]) + 1
    if (gen_dir / GENERATOR_DONE).is_file():
        log.info("reusing the generator in %s", gen_dir)
        return load_generator(gen_dir, recipe, num_classes)
    return train_generator(splits["train"], recipe, gen_dir, num_classes=num_classes, progress=False)


def targets(samplers: dict[str, dict]) -> dict[str, dict]:
    """The issue's targets: default FID <= 1.05x DDIM-50's in <= 0.35x its time and <= 60 s per 1000; a fast CFG
    setting at FID <= 1.05x CFG DDIM-50's in <= 0.35x its time."""
    ddim, default, cfg = samplers["ddim50"], samplers["default"], samplers["cfg_ddim50"]
    fast = {k: v for k, v in samplers.items() if k.startswith("cfg_") and k != "cfg_ddim50"}
    ok = {k: v["fid"] <= 1.05 * cfg["fid"] and v["seconds_per_1000"] <= 0.35 * cfg["seconds_per_1000"]
          for k, v in fast.items()}  # fmt: skip
    return {
        "default_fid_ratio_to_ddim50": default["fid"] / ddim["fid"],
        "default_time_ratio_to_ddim50": default["seconds_per_1000"] / ddim["seconds_per_1000"],
        "default_seconds_per_1000": default["seconds_per_1000"],
        "default_met": default["fid"] <= 1.05 * ddim["fid"]
        and default["seconds_per_1000"] <= 0.35 * ddim["seconds_per_1000"]
        and default["seconds_per_1000"] <= 60.0,
        "cfg_fast_met": {k: bool(v) for k, v in ok.items()},
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="MedMNIST .npz or a train/[valid/]test folder")
    parser.add_argument("--train-minutes", type=float, default=10.0, help="generator training budget")
    parser.add_argument("--work-dir", required=True, help="generator checkpoints (reused when finished)")
    parser.add_argument("--out", required=True, help="result JSON")
    parser.add_argument("--n", type=int, default=1000, help="synthetic images per setting (class-balanced)")
    parser.add_argument("--cfg-scale", type=float, default=2.0, help="CFG weight w of the cfg_* settings (> 1)")
    parser.add_argument("--only", nargs="*", default=None, help="run only these settings (names; 'quick': "
                        f"{' '.join(QUICK)}); ddim50, cfg_ddim50 and default always run")
    parser.add_argument("--reuse", default=None, help="a previous result JSON of the same generator: identical "
                        "settings are copied from it instead of sampled again (its seconds were measured side by side)")
    parser.add_argument("--recipe", nargs="*", default=[], help="DiffusionRecipe overrides for the generator, "
                        "key=value (e.g. loss=l2); must match the generator a reused --work-dir holds")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(max(1, torch.get_num_threads()))

    from monai_synth.apps.augmentation import DiffusionRecipe
    from monai_synth.data import load_labelled_splits
    from monai_synth.engines.generate import plan_class_counts
    from monai_synth.evaluate import stack_items
    from monai_synth.metrics import InceptionFeatureExtractor, compute_fid

    if not args.cfg_scale > 1:
        raise SystemExit(f"--cfg-scale must be > 1 (w = 1 is no guidance), got {args.cfg_scale}")
    from utility import _parse_recipe

    overrides = _parse_recipe(args.recipe)
    recipe = DiffusionRecipe(**{"train_minutes": args.train_minutes, "epochs": 10_000, **overrides})
    data = Path(args.data)
    splits = load_labelled_splits("medmnist" if data.suffix == ".npz" else "folder", data, recipe.image_size)
    gen = generator_for(args, recipe, splits)
    extractor = InceptionFeatureExtractor(dims=2048)
    rng = np.random.default_rng(0)
    test = [splits["test"][i] for i in rng.permutation(len(splits["test"]))[: args.n]]
    train = [splits["train"][i] for i in rng.permutation(len(splits["train"]))[: args.n]]
    f_test, f_train = extractor(stack_items(test)), extractor(stack_items(train))
    fid_real = float(compute_fid(f_train, f_test))
    num_classes = gen.num_classes
    counts = plan_class_counts(class_ratio=[1.0] * num_classes, total=args.n)
    result = {"data": str(data), "train_minutes": args.train_minutes, "generator_epochs": gen.epochs,
              "n": args.n, "cfg_scale": args.cfg_scale, "fid_train_test": fid_real,
              "torch_threads": torch.get_num_threads(), "recipe": {"sampler": recipe.sampler,
              "sample_steps": recipe.sample_steps, "guidance_scale": recipe.guidance_scale,
              "sample_eta": recipe.sample_eta, "guidance_interval": recipe.guidance_interval,
              "timestep_shift": recipe.timestep_shift,
              "overrides": {k: str(v) for k, v in overrides.items()}},
              "samplers": {}}  # fmt: skip
    done = {}
    if args.reuse:
        old = json.loads(Path(args.reuse).read_text())
        if (old["generator_epochs"], old["n"], old["cfg_scale"]) != (gen.epochs, args.n, args.cfg_scale):
            raise SystemExit(f"--reuse {args.reuse}: another generator, --n or --cfg-scale; run without --reuse.")
        result["reused_from"] = str(args.reuse)
        done = {k: v for k, v in old["samplers"].items() if "same_as" not in v}
        result["fid_train_test"] = old["fid_train_test"]
    only = [n for o in (args.only or []) for n in (QUICK if o == "quick" else [o])]
    for name, setting in settings(recipe, args.cfg_scale).items():
        if only and name not in only and name not in ("ddim50", "default", "cfg_ddim50"):
            continue
        key = (setting["sampler"], setting["steps"], setting["w"], setting["interval"], setting_eta(setting, recipe),
               setting.get("shift", 1.0))  # fmt: skip
        same = next((k for k, v in {**done, **result["samplers"]}.items()
                     if (v["sampler"], v["steps"], v["w"], None if v["interval"] is None else tuple(v["interval"]),
                         setting_eta(v, recipe), v.get("shift", 1.0)) == key), None)  # fmt: skip
        if same is not None:
            result["samplers"][name] = {**({**done, **result["samplers"]}[same]), "same_as": same}
            continue
        t0 = time.perf_counter()
        images, nfe = sample_images(gen, recipe, setting, counts, args.seed, args.batch_size)
        seconds = time.perf_counter() - t0
        fid = float(compute_fid(extractor(images), f_test))
        result["samplers"][name] = {**setting, "eta": setting_eta(setting, recipe), "nfe": nfe, "seconds": seconds,
                                    "seconds_per_1000": 1000.0 * seconds / len(images), "fid": fid,
                                    "fid_ratio_to_real": fid / fid_real}  # fmt: skip
        log.info("%-28s NFE %3d  %6.1f s/1000  FID %.2f", name, nfe, 1000.0 * seconds / len(images), fid)
        _write_json(result, args.out)
    result["targets"] = targets(result["samplers"])
    _write_json(result, args.out)
    log.info("targets: %s", result["targets"])
    return result


if __name__ == "__main__":
    main()
