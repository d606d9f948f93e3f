"""Guided bundles: today's blend against seed 001's paper-literal guidance, on one checkpoint -> JSON.

Usage::

    python benchmarks/guidance_modes.py --bundle lung_ct_ddpm --work-dir ./outputs/guidance_ct \\
        --override data_source=dicom data_path=../shared/data/lung_ct_dicom_lungpetctdx_A0001/dicom \\
                   annotation_dir=../shared/data/lung_ct_dicom_lungpetctdx_A0001/annotations \\
        --epochs 600 --num-samples 48 --out benchmarks/results/guidance_modes_ct.json

Trains the bundle's DDPM with its own ``train.yaml`` (reused when ``--work-dir`` holds a finished run), then samples
``--num-samples`` guided images with every ``guidance_mode`` (same checkpoint, same seed, same reference pairs; every
sample with a lesion unless ``--override positive_fraction=...``) and reports, per mode, the lesion check
(:func:`monai_synth.metrics.lesion_in_box`: fraction of samples whose lesion is in its box, median correlation and
gain) and KID (64-d Inception features) of the samples against the real images
the bundle prepared. ``--override key=value`` sets bundle keys for every run (values are Python literals or strings).
"""

from __future__ import annotations

import argparse
import ast
import json
import time
from pathlib import Path

import numpy as np
import torch

BUNDLES = Path(__file__).resolve().parent.parent / "bundles"
MODES = ("blend", "paper_literal", "replace")


def _value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _parser(bundle: str, configs: list[str], overrides: dict):
    from monai.bundle import ConfigParser

    root = BUNDLES / bundle
    parser = ConfigParser()
    parser.read_config([str(root / "configs" / c) for c in configs])
    parser.update({"bundle_root": str(root), **overrides})
    return parser


def _run(parser) -> None:
    parser.get_parsed_content("run")  # evaluating the config's run list runs it, as `monai.bundle run` does


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", choices=["lung_ct_ddpm", "mammo_pathology_ddpm"], required=True)
    ap.add_argument("--work-dir", required=True)
    ap.add_argument("--override", nargs="*", default=[], help="bundle keys for every run, key=value")
    ap.add_argument("--epochs", type=int, default=600)
    ap.add_argument("--num-samples", type=int, default=48)
    ap.add_argument("--modes", nargs="+", default=list(MODES))
    ap.add_argument("--out", default="guidance_modes.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)

    from monai_synth.data.image_io import load_image_2d
    from monai_synth.metrics import InceptionFeatureExtractor, compute_kid
    from monai_synth.utils.io import atomic_path

    work = Path(args.work_dir).resolve()
    overrides = {k: _value(v) for k, v in (o.split("=", 1) for o in args.override)}
    overrides["output_dir"] = str(work)
    train = _parser(args.bundle, ["common.yaml", "train.yaml"], {**overrides, "recipe#epochs": args.epochs})
    done = work / "train_done.json"
    t0 = time.perf_counter()
    if not done.is_file():
        _run(train)
        with atomic_path(done) as tmp:
            tmp.write_text(json.dumps({"epochs": args.epochs, "seconds": time.perf_counter() - t0}))
    train_info = json.loads(done.read_text())
    images = train.get_parsed_content("images")
    real = (torch.stack([im.image for im in images]) + 1.0) / 2.0  # [0, 1] for the Inception features
    extractor = InceptionFeatureExtractor(dims=64)
    real_feats = extractor(real)
    result: dict = {
        "bundle": args.bundle,
        "overrides": {k: str(v) for k, v in overrides.items() if k != "output_dir"},
        "train": train_info,
        "n_real": len(images),
        "num_samples": args.num_samples,
        "modes": {},
    }
    for mode in args.modes:
        out = work / f"samples_{mode}"
        sample = _parser(
            args.bundle,
            ["common.yaml", "sample.yaml"],
            # every sample with a lesion (the modes differ in how it is guided), unless --override says otherwise
            {"positive_fraction": 1.0, **overrides, "guidance_mode": mode, "sample_dir": str(out),
             "num_samples": args.num_samples},
        )
        t0 = time.perf_counter()
        _run(sample)
        seconds = time.perf_counter() - t0
        pngs = sorted(out.glob("sample_[0-9][0-9][0-9][0-9].png"))
        synth = torch.stack([load_image_2d(p, rescale="dtype") for p in pngs])
        kid = compute_kid(extractor(synth), real_feats, subset_size=min(len(images), len(pngs), 100))
        summary = json.loads((out / "lesion_in_box.json").read_text())
        sidecars = [json.loads(j.read_text()) for j in sorted(out.glob("sample_[0-9][0-9][0-9][0-9].json"))]
        per = [c["lesion_in_box"] for c in sidecars if "lesion_in_box" in c]  # anatomy-only samples have none
        corr = [p["correlation"] for p in per if p["correlation"] is not None]
        result["modes"][mode] = {
            **summary,
            "mean_correlation": float(np.mean(corr)) if corr else None,
            "kid64_vs_real": {"mean": float(kid.mean), "std": float(kid.std)},
            "sampling_seconds": seconds,
        }
        print(mode, json.dumps(result["modes"][mode]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
