"""Dataset-pair evaluation table (seed 000, Table 1): FID, KID, SSIM, MS-SSIM and MSE for pairs of image sets.

Called by the bundles' ``evaluate.yaml``::

    table = evaluate_sets({"Real train": x_train, "Real test": x_test, "Diffusion": x_syn, "OOD": x_ood},
                          pairs=[("Real train", "Real test"), ("Diffusion", "Real train"), ...],
                          extractor=InceptionFeatureExtractor(2048), output_dir="eval")

Features are extracted once per set and reused for every pair. Seed 000 compares against Fashion-MNIST as an
out-of-domain reference; FashionMNIST is not available offline here, so any out-of-domain set supplied by the
user takes its place (e.g. CT slices or NIH CXR PNGs resized to the same shape).
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.utils import optional_import

from monai_synth.data.datalists import load_datalist_json
from monai_synth.data.image_io import load_image_2d, resize_images
from monai_synth.metrics.features import InceptionFeatureExtractor, as_float_images
from monai_synth.metrics.fid import compute_fid
from monai_synth.metrics.kid import compute_kid
from monai_synth.metrics.similarity import ms_ssim_between, ms_ssim_params_for_size, mse_between, ssim_between
from monai_synth.utils.io import atomic_path

__all__ = ["EvaluationTable", "TABLE1_PAIRS", "evaluate_sets", "load_image_set", "stack_items", "table1_evaluation"]

logger = logging.getLogger(__name__)

COLUMNS: tuple[str, ...] = (
    "Dataset A",
    "Dataset B",
    "N A",
    "N B",
    "FID",
    "KID mean",
    "KID std",
    "SSIM",
    "MS-SSIM",
    "MSE",
)


@dataclass(frozen=True)
class EvaluationTable:
    """Rows of the evaluation table (one per dataset pair), in :data:`COLUMNS` order.

    Attributes:
        rows: list of ``{column: value}``; metrics that do not apply (e.g. MS-SSIM on small images) are ``nan``.
        csv_path: CSV file written, or ``None``.
        markdown_path: Markdown file written, or ``None``.
    """

    rows: list[dict[str, object]]
    csv_path: Path | None = None
    markdown_path: Path | None = None

    def to_markdown(self, digits: int = 4) -> str:
        """Markdown table (``n/a`` for metrics that do not apply)."""

        def fmt(v: object) -> str:
            if isinstance(v, float):
                return "n/a" if math.isnan(v) else f"{v:.{digits}g}"
            return str(v)

        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
        lines += ["| " + " | ".join(fmt(r[c]) for c in COLUMNS) + " |" for r in self.rows]
        return "\n".join(lines) + "\n"


def load_image_set(path: str | os.PathLike, key: str | None = None) -> torch.Tensor:
    """Load an image set ``(N, C, *spatial)`` from ``.npy``/``.npz`` (no pickle) or ``.pt`` (weights only).

    Args:
        path: file to read.
        key: array name inside a ``.npz`` or dict ``.pt`` file (default: the only entry).

    Returns:
        the images as a tensor (dtype kept).

    Raises:
        ValueError: unknown suffix, or ambiguous/missing ``key``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return torch.from_numpy(np.load(path, allow_pickle=False))
    if suffix in (".npz", ".pt", ".pth"):
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        else:
            from monai_synth.utils.io import safe_torch_load

            data = safe_torch_load(path)  # weights_only=True; ValueError naming the file for pickled objects
        if isinstance(data, torch.Tensor):
            return data
        if key is None:
            if len(data) != 1:
                raise ValueError(f"{path} holds {sorted(data)}; pass `key` to choose one.")
            key = next(iter(data))
        if key not in data:
            raise ValueError(f"{path} has no entry {key!r}; available: {sorted(data)}.")
        return torch.as_tensor(data[key])
    raise ValueError(f"{path}: unsupported suffix {suffix!r}; use .npy, .npz or .pt.")


def _ssim_kernel(spatial: Sequence[int]) -> int:
    """Wang et al.'s 11-px window, or the largest odd window that fits smaller images."""
    smallest = min(int(v) for v in spatial)
    return 11 if smallest >= 11 else max(1, smallest - (1 - smallest % 2))


def _markdown_safe_name(name: str) -> str:
    return name.replace("|", "/")


def evaluate_sets(
    sets: Mapping[str, torch.Tensor | np.ndarray],
    pairs: Sequence[tuple[str, str]],
    extractor: Callable[[torch.Tensor], torch.Tensor] | None = None,
    n_ssim_pairs: int = 1000,
    seed: int = 0,
    kid_subset_size: int = 1000,
    kid_subsets: int = 100,
    output_dir: str | os.PathLike | None = None,
    log_mlflow: bool = True,
) -> EvaluationTable:
    """Compute FID, KID, SSIM, MS-SSIM (where the image size allows) and MSE for each pair of sets.

    Args:
        sets: ``{name: images (N, C, *spatial)}`` in ``[0, 1]`` or uint8; all sets in a pair must share a shape.
        pairs: ``(name_a, name_b)`` pairs, one table row each (seed 000 Table 1 layout).
        extractor: feature extractor for FID/KID; ``None`` loads ``InceptionFeatureExtractor(dims=2048)``.
        n_ssim_pairs: random image pairs for SSIM / MS-SSIM / MSE.
        seed: seed for SSIM/MSE pairs and KID subsets.
        kid_subset_size: KID subset size (capped at the set sizes).
        kid_subsets: number of KID subsets.
        output_dir: when given, writes ``evaluation.csv`` and ``evaluation.md`` there.
        log_mlflow: when an MLflow run is active, log every value as a metric and the files as artifacts.

    Returns:
        :class:`EvaluationTable`.

    Raises:
        ValueError: a pair names an unknown set.
    """
    for a, b in pairs:
        for name in (a, b):
            if name not in sets:
                raise ValueError(f"pair ({a!r}, {b!r}) names unknown set {name!r}; sets: {sorted(sets)}.")
    if extractor is None:
        extractor = InceptionFeatureExtractor(dims=2048)
    used = list(dict.fromkeys(n for p in pairs for n in p))
    images = {n: as_float_images(sets[n], n) for n in used}
    features: dict[str, torch.Tensor] = {}
    for n in used:
        logger.info("extracting features of %r (%d images)", n, images[n].shape[0])
        features[n] = extractor(images[n])

    rows: list[dict[str, object]] = []
    for a, b in pairs:
        xa, xb = images[a], images[b]
        kid = compute_kid(features[a], features[b], kid_subset_size, kid_subsets, seed)
        try:
            ms_ssim_params_for_size(xa.shape[2:])
            ms = ms_ssim_between(xa, xb, n_ssim_pairs, seed).mean
        except ValueError as err:
            logger.info("MS-SSIM skipped for (%s, %s): %s", a, b, err)
            ms = float("nan")
        rows.append(
            {
                "Dataset A": a,
                "Dataset B": b,
                "N A": int(xa.shape[0]),
                "N B": int(xb.shape[0]),
                "FID": compute_fid(features[a], features[b]),
                "KID mean": kid.mean,
                "KID std": kid.std,
                "SSIM": ssim_between(xa, xb, n_ssim_pairs, seed, kernel_size=_ssim_kernel(xa.shape[2:])).mean,
                "MS-SSIM": ms,
                "MSE": mse_between(xa, xb, n_ssim_pairs, seed).mean,
            }
        )
    table = EvaluationTable(rows)
    csv_path = md_path = None
    if output_dir is not None:
        out = Path(output_dir)
        csv_path, md_path = out / "evaluation.csv", out / "evaluation.md"
        with atomic_path(csv_path) as tmp:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(COLUMNS))
                writer.writeheader()
                writer.writerows(rows)
        with atomic_path(md_path) as tmp:
            tmp.write_text(
                EvaluationTable(
                    [
                        {
                            **r,
                            "Dataset A": _markdown_safe_name(str(r["Dataset A"])),
                            "Dataset B": _markdown_safe_name(str(r["Dataset B"])),
                        }
                        for r in rows
                    ]
                ).to_markdown()
            )
        table = EvaluationTable(rows, csv_path, md_path)
    if log_mlflow:
        _log_mlflow(table)
    return table


def _metric_key(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def _log_mlflow(table: EvaluationTable) -> None:
    mlflow, has_mlflow = optional_import("mlflow")
    if not has_mlflow or mlflow.active_run() is None:
        return
    metrics = {}
    for r in table.rows:
        pair = _metric_key(f"{r['Dataset A']}_vs_{r['Dataset B']}")
        for c in ("FID", "KID mean", "KID std", "SSIM", "MS-SSIM", "MSE"):
            v = float(r[c])  # type: ignore[arg-type]
            if not math.isnan(v):
                metrics[f"eval/{pair}/{_metric_key(c)}"] = v
    mlflow.log_metrics(metrics)
    for p in (table.csv_path, table.markdown_path):
        if p is not None:
            mlflow.log_artifact(str(p), artifact_path="evaluation")


def stack_items(
    items: Sequence[Mapping[str, Any]] | str | os.PathLike,
    max_images: int | None = None,
    seed: int = 0,
    image_size: int | None = None,
) -> torch.Tensor:
    """Stack datalist items (arrays or image files) into ``(N, C, H, W)`` float images in [0, 1].

    Args:
        items: ``[{"image": array or path, ...}]`` or the path of a datalist JSON (its ``training`` list), e.g. the
            ``datalist.json`` written next to a generated synthetic set.
        max_images: keep a seeded random subset of at most this many images.
        seed: subset seed.
        image_size: resize (bilinear, anti-aliased) to this square size; ``None`` keeps the size.
    """
    if isinstance(items, (str, os.PathLike)):
        items = load_datalist_json(items, "training")
    items = list(items)
    if not items:
        raise ValueError("`items` is empty: nothing to evaluate.")
    if max_images is not None and len(items) > max_images:
        idx = np.random.default_rng(seed).permutation(len(items))[: int(max_images)]
        items = [items[i] for i in sorted(idx)]
    out = []
    for it in items:
        img = it["image"]
        if isinstance(img, (str, os.PathLike)):
            x = load_image_2d(img, rescale="dtype")
        else:
            x = torch.as_tensor(np.asarray(img), dtype=torch.float32)
        out.append(x)
    images = torch.stack(out)
    return images if image_size is None else resize_images(images, int(image_size))


TABLE1_PAIRS = (
    ("real train", "real test"),
    ("synthetic", "real train"),
    ("synthetic", "real test"),
    ("real train", "out-of-domain"),
    ("real test", "out-of-domain"),
    ("synthetic", "out-of-domain"),
)


def table1_evaluation(
    real_train: Sequence[Mapping[str, Any]] | str | os.PathLike,
    real_test: Sequence[Mapping[str, Any]] | str | os.PathLike,
    synthetic: Sequence[Mapping[str, Any]] | str | os.PathLike,
    out_of_domain: Sequence[Mapping[str, Any]] | str | os.PathLike | None = None,
    max_images: int = 1000,
    n_ssim_pairs: int = 1000,
    seed: int = 0,
    output_dir: str | os.PathLike | None = None,
    extractor: Callable[[torch.Tensor], torch.Tensor] | None = None,
    kid_subset_size: int = 100,
    kid_subsets: int = 50,
    fid_dims: int = 2048,
) -> EvaluationTable:
    """The seed 000 Table 1 comparison: real train vs real test, synthetic vs each, and each vs an out-of-domain set.

    Seed 000 used FashionMNIST as the out-of-domain reference; pass any set you have (rows with it are left out
    when ``out_of_domain`` is ``None``). Sets are subsampled to ``max_images`` (seed 000: 1k; FID is biased upwards
    at small N, so compare rows with equal N only) and resized to the real training images' size. Without an
    ``extractor`` FID/KID use the Inception features of dimension ``fid_dims`` (64, 192, 768 or 2048, pytorch-fid's
    taps; seed 002 compares 64 and 2048).
    """
    if extractor is None:
        extractor = InceptionFeatureExtractor(dims=int(fid_dims))
    sets = {"real train": stack_items(real_train, max_images, seed)}
    size = int(sets["real train"].shape[-1])
    sets["real test"] = stack_items(real_test, max_images, seed, size)
    sets["synthetic"] = stack_items(synthetic, max_images, seed, size)
    if out_of_domain is not None:
        sets["out-of-domain"] = stack_items(out_of_domain, max_images, seed, size)
    pairs = [p for p in TABLE1_PAIRS if all(n in sets for n in p)]
    return evaluate_sets(
        sets,
        pairs,
        extractor=extractor,
        n_ssim_pairs=n_ssim_pairs,
        seed=seed,
        kid_subset_size=min(kid_subset_size, max_images),
        kid_subsets=kid_subsets,
        output_dir=output_dir,
    )
