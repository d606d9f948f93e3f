"""Near-copy measure on real chest X-rays: recall on planted copies, false positives, and scale -> JSON.

Usage::

    python benchmarks/copy_detection.py --data ../shared/data/kermany_cxr224 --image-size 64 \\
        --out benchmarks/results/copy_detection.json

Validation (issue 13): the training images of the folder's train split are the references. The threshold is
calibrated on the patient-disjoint validation split (carved from train, grouped by patient) at ``--quantile``;
the false-positive rate is measured on the test split (other patients). Planted copies are ``--copies`` training
images edited by :func:`monai_synth.metrics.copy_detection.planted_copies` (flip, shifts up to 4 px, gamma
0.8-1.25, 90 % crop resized back, noise sigma 0.02, and combinations): recall is the share scoring at or above the
threshold, ``right_reference`` the share matched to their own source (or a byte-identical duplicate of it). The
raw-pixel RMS distance of :mod:`monai_synth.metrics.memorization`, calibrated the same way, is measured beside it.

Scale: ``--scale-candidates`` candidates against ``--scale-references`` references at ``--image-size`` (edited
copies of the real images, so every reference is distinct), timed for the index and for the search.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

EDIT_SETS: dict[str, tuple[str, ...]] = {
    "none": (),
    "flip": ("flip",),
    "shift": ("shift",),
    "gamma": ("gamma",),
    "crop90": ("crop90",),
    "noise": ("noise",),
    "flip+shift": ("flip", "shift"),
    "gamma+noise": ("gamma", "noise"),
    "crop90+flip": ("crop90", "flip"),
    "all": ("flip", "shift", "gamma", "crop90", "noise"),
}


def _stack(items: list[dict]) -> torch.Tensor:
    return torch.stack([torch.as_tensor(np.asarray(it["image"])) for it in items])


def validate(train: torch.Tensor, val: torch.Tensor, test: torch.Tensor, copies: int, quantile: float) -> dict:
    """Recall of planted copies and false-positive rate, for the copy descriptor and for pixel RMS distance."""
    from monai_synth.metrics import nearest_neighbours, pixel_vectors
    from monai_synth.metrics.copy_detection import NearCopyIndex, calibrate_threshold, planted_copies

    t0 = time.perf_counter()
    index = NearCopyIndex(train)
    threshold, val_scores = calibrate_threshold(index, val, quantile)
    test_scores, _ = index.search(test)
    flat = train.flatten(1)
    pix_train = pixel_vectors(train)
    pix_val = nearest_neighbours(pixel_vectors(val), pix_train)[0]
    pix_threshold = float(torch.quantile(pix_val, 1.0 - quantile))
    pix_test = nearest_neighbours(pixel_vectors(test), pix_train)[0]
    source = torch.randperm(train.shape[0], generator=torch.Generator().manual_seed(0))[:copies]
    out: dict = {
        "n_references": int(train.shape[0]), "n_calibration": int(val.shape[0]), "n_fpr": int(test.shape[0]),
        "quantile": quantile, "threshold": threshold,
        "false_positive_rate": float((test_scores >= threshold).double().mean()),
        "calibration_scores": {q: float(val_scores.quantile(q)) for q in (0.5, 0.9, 0.99)},
        "pixel_rms": {
            "threshold": pix_threshold, "false_positive_rate": float((pix_test < pix_threshold).double().mean()),
        },
        "edits": {},
    }  # fmt: skip
    for k, (name, edits) in enumerate(EDIT_SETS.items()):
        x = planted_copies(train[source], edits, seed=100 + k)
        scores, ref = index.search(x)
        same = (flat[ref] == flat[source]).all(dim=1)  # own source or a byte-identical duplicate
        pix_d = nearest_neighbours(pixel_vectors(x), pix_train)[0]
        out["edits"][name] = {
            "recall": float((scores >= threshold).double().mean()),
            "right_reference": float(same.double().mean()),
            "score_min": float(scores.min()), "score_q05": float(scores.quantile(0.05)),
            "pixel_rms_recall": float((pix_d < pix_threshold).double().mean()),
        }  # fmt: skip
        print(name, out["edits"][name], flush=True)
    out["seconds"] = time.perf_counter() - t0
    return out


def scale(images: torch.Tensor, n_candidates: int, n_references: int) -> dict:
    """Index and search time at scale; candidates and references are distinct edited copies of ``images``."""
    from monai_synth.metrics.copy_detection import EVASIONS, NearCopyIndex, planted_copies

    def edited(n: int, seed: int):
        for k, s in enumerate(range(0, n, 4096)):
            pick = torch.randint(
                0, images.shape[0], (min(4096, n - s),), generator=torch.Generator().manual_seed(seed + k)
            )
            yield planted_copies(images[pick], EVASIONS, seed=seed + k)

    t0 = time.perf_counter()
    index = NearCopyIndex(edited(n_references, 1000))
    t_index = time.perf_counter() - t0
    candidates = torch.cat(list(edited(n_candidates, 5000)))
    t1 = time.perf_counter()
    scores, _ = index.search(candidates)
    t_search = time.perf_counter() - t1
    return {
        "n_candidates": n_candidates, "n_references": len(index), "image_size": int(images.shape[-1]),
        "index_seconds": t_index, "search_seconds": t_search, "score_median": float(scores.median()),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder data set (train/test class folders, labels.csv)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--copies", type=int, default=500, help="planted copies per edit")
    parser.add_argument("--quantile", type=float, default=0.99)
    parser.add_argument("--scale-candidates", type=int, default=10000)
    parser.add_argument("--scale-references", type=int, default=50000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="copy_detection.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from monai_synth.data import load_labelled_splits
    from monai_synth.metrics.copy_detection import CopyDescriptor

    splits = load_labelled_splits("folder", args.data, image_size=args.image_size, seed=0)
    train, val, test = (_stack(splits[k]) for k in ("train", "val", "test"))
    result = {
        "data": Path(args.data).name,
        "image_size": args.image_size,
        "descriptor": CopyDescriptor().settings(),
        "validation": validate(train, val, test, min(args.copies, train.shape[0]), args.quantile),
    }
    if args.scale_candidates > 0 and args.scale_references > 0:
        result["scale"] = scale(torch.cat([train, val, test]), args.scale_candidates, args.scale_references)
        print("scale", result["scale"], flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
