"""Memorization audit: are synthetic images near-copies of training images?

For each synthetic image we find its nearest training image, in pixel space and optionally in a feature space,
and compare the distance distribution with the *real-test -> train* nearest-neighbour distances, which tell how
close an independent image from the same distribution typically is to the training set (the "distance to
closest record" protocol used for synthetic-data privacy, e.g. Carlini et al. 2023, "Extracting training data
from diffusion models"; Somepalli et al. 2023). A synthetic image much closer to a training image than real
held-out images ever are is flagged as a near-copy.

Pixel distance: ``d(x, y) = ||x - y||_2 / sqrt(D)`` on flattened images in ``[0, 1]`` (the root-mean-square
pixel difference, so thresholds do not depend on resolution; a copy with added noise of std ``s`` is at ~``s``).
Feature distance: Euclidean distance between extractor features.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from monai_synth.metrics.features import as_float_images

__all__ = [
    "MemorizationReport",
    "SpaceAudit",
    "memorization_audit",
    "nearest_neighbours",
    "pixel_vectors",
    "plot_closest_pairs",
]

logger = logging.getLogger(__name__)

DEFAULT_QUANTILES: tuple[float, ...] = (0.0, 0.01, 0.05, 0.25, 0.5)


def pixel_vectors(images: torch.Tensor | np.ndarray, name: str = "images") -> torch.Tensor:
    """Flatten images in ``[0, 1]`` (or uint8) and scale by ``1 / sqrt(D)`` so L2 distance is the RMS difference."""
    x = as_float_images(images, name).flatten(1)
    return x / math.sqrt(x.shape[1])


def nearest_neighbours(
    queries: torch.Tensor, references: torch.Tensor, chunk_size: int = 1024, exclude_self: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest reference for every query vector (Euclidean), in chunks so large sets fit in memory.

    The search uses ``torch.cdist`` in float32 (matrix-multiply form, fast); the distance to the chosen
    neighbour is then recomputed exactly in float64, so exact copies get distance 0.

    Args:
        queries: ``(n, D)``.
        references: ``(m, D)``.
        chunk_size: queries per ``cdist`` call.
        exclude_self: when queries and references are the same set, ignore ``i == i`` matches.

    Returns:
        ``(distances (n,) float64, indices (n,) int64)``.

    Raises:
        ValueError: shape mismatch or empty reference set.
    """
    if queries.ndim != 2 or references.ndim != 2 or queries.shape[1] != references.shape[1]:
        raise ValueError(
            f"need (n, D) and (m, D) with the same D, got {tuple(queries.shape)}, {tuple(references.shape)}."
        )
    if references.shape[0] < (2 if exclude_self else 1):
        raise ValueError("the reference set is empty.")
    ref32 = references.float()
    idx = torch.empty(queries.shape[0], dtype=torch.long)
    for s in range(0, queries.shape[0], chunk_size):
        d = torch.cdist(queries[s : s + chunk_size].float(), ref32)
        if exclude_self:
            rows = torch.arange(d.shape[0])
            d[rows, rows + s] = float("inf")
        idx[s : s + chunk_size] = d.argmin(dim=1)
    dist = (queries.double() - references[idx].double()).norm(dim=1)
    return dist, idx


@dataclass(frozen=True)
class SpaceAudit:
    """Nearest-neighbour audit in one space (``"pixel"`` or ``"feature"``).

    Attributes:
        space: ``"pixel"`` or ``"feature"``.
        synthetic_distances: ``(n_syn,)`` distance of each synthetic image to its nearest training image.
        synthetic_nearest: ``(n_syn,)`` index of that training image.
        test_distances: ``(n_test,)`` real-test -> train nearest distances, or ``None`` without a test set.
        quantiles: ``{"synthetic": {q: value}, "test": {q: value}}``.
        fraction_below_test_p1: share of synthetic images closer to train than the 1st percentile of test->train.
        fraction_below_test_p5: same for the 5th percentile.
        threshold: distance below which a synthetic image is flagged.
        flagged: indices of flagged synthetic images, sorted by distance (closest first).
    """

    space: str
    synthetic_distances: torch.Tensor
    synthetic_nearest: torch.Tensor
    test_distances: torch.Tensor | None
    quantiles: dict[str, dict[float, float]]
    fraction_below_test_p1: float | None
    fraction_below_test_p5: float | None
    threshold: float
    flagged: torch.Tensor

    def summary(self) -> dict[str, float]:
        """Flat ``{name: value}`` dict for logging (MLflow metrics / JSON)."""
        out: dict[str, float] = {
            f"{self.space}_threshold": self.threshold,
            f"{self.space}_n_flagged": len(self.flagged),
        }
        for group, qs in self.quantiles.items():
            for q, v in qs.items():
                out[f"{self.space}_{group}_q{q:g}"] = v
        if self.fraction_below_test_p1 is not None:
            out[f"{self.space}_frac_below_test_p1"] = self.fraction_below_test_p1
            out[f"{self.space}_frac_below_test_p5"] = float(self.fraction_below_test_p5)
        return out


@dataclass(frozen=True)
class MemorizationReport:
    """Result of :func:`memorization_audit`.

    Attributes:
        pixel: pixel-space audit.
        feature: feature-space audit, or ``None`` when no extractor was given.
        figure_path: PNG of the closest pairs, or ``None``.
    """

    pixel: SpaceAudit
    feature: SpaceAudit | None = None
    figure_path: Path | None = None

    def summary(self) -> dict[str, float]:
        """Flat dict of the pixel (and feature) summaries."""
        out = self.pixel.summary()
        if self.feature is not None:
            out.update(self.feature.summary())
        return out


def _quantiles(values: torch.Tensor, qs: Sequence[float]) -> dict[float, float]:
    t = torch.quantile(values.double(), torch.tensor(list(qs), dtype=torch.float64))
    return {float(q): float(v) for q, v in zip(qs, t)}


def _audit_space(
    space: str,
    synthetic: torch.Tensor,
    train: torch.Tensor,
    test: torch.Tensor | None,
    threshold: float | None,
    threshold_quantile: float,
    quantiles: Sequence[float],
    chunk_size: int,
) -> SpaceAudit:
    syn_d, syn_i = nearest_neighbours(synthetic, train, chunk_size)
    test_d = nearest_neighbours(test, train, chunk_size)[0] if test is not None else None
    if threshold is None:
        if test_d is None:
            raise ValueError("give an explicit `threshold` or a real `test` set to derive it from a quantile.")
        threshold = float(torch.quantile(test_d, threshold_quantile))
    qs = {"synthetic": _quantiles(syn_d, quantiles)}
    p1 = p5 = None
    if test_d is not None:
        qs["test"] = _quantiles(test_d, quantiles)
        p1 = float((syn_d < torch.quantile(test_d, 0.01)).double().mean())
        p5 = float((syn_d < torch.quantile(test_d, 0.05)).double().mean())
    flagged = torch.nonzero(syn_d < threshold).reshape(-1)
    flagged = flagged[torch.argsort(syn_d[flagged])]
    return SpaceAudit(space, syn_d, syn_i, test_d, qs, p1, p5, float(threshold), flagged)


def memorization_audit(
    synthetic: torch.Tensor | np.ndarray,
    train: torch.Tensor | np.ndarray,
    test: torch.Tensor | np.ndarray | None = None,
    extractor: Callable[[torch.Tensor], torch.Tensor] | None = None,
    threshold: float | None = None,
    threshold_quantile: float = 0.01,
    feature_threshold: float | None = None,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    figure_path: str | Path | None = None,
    n_figure_pairs: int = 8,
    chunk_size: int = 1024,
) -> MemorizationReport:
    """Nearest-training-image audit of a synthetic set in pixel space and (optionally) feature space.

    Args:
        synthetic: ``(n_syn, C, *spatial)`` synthetic images in ``[0, 1]`` or uint8.
        train: ``(n_train, C, *spatial)`` training images (same shape).
        test: real held-out images from the same distribution, giving the reference distance distribution.
        extractor: optional feature extractor (e.g. :class:`InceptionFeatureExtractor` or a classifier's).
        threshold: explicit pixel RMS distance below which an image is a near-copy; ``None`` uses the
            ``threshold_quantile`` quantile of the test->train distances.
        threshold_quantile: quantile used when ``threshold`` is ``None``.
        feature_threshold: explicit feature-space threshold; ``None`` uses the same quantile rule.
        quantiles: quantiles reported for both distributions.
        figure_path: where to save a PNG of the closest pixel-space pairs (synthetic | nearest train).
        n_figure_pairs: number of pairs in the figure.
        chunk_size: queries per distance chunk.

    Returns:
        :class:`MemorizationReport`.

    Raises:
        ValueError: shape mismatch, or neither ``threshold`` nor ``test`` given.
    """
    syn_img = as_float_images(synthetic, "synthetic")
    train_img = as_float_images(train, "train")
    test_img = as_float_images(test, "test") if test is not None else None
    for name, other in (("train", train_img), ("test", test_img)):
        if other is not None and other.shape[1:] != syn_img.shape[1:]:
            raise ValueError(
                f"`{name}` images {tuple(other.shape[1:])} differ from synthetic {tuple(syn_img.shape[1:])}."
            )
    def audit(space: str, embed: Callable[[torch.Tensor], torch.Tensor], space_threshold: float | None) -> SpaceAudit:
        test = embed(test_img) if test_img is not None else None
        return _audit_space(
            space, embed(syn_img), embed(train_img), test, space_threshold, threshold_quantile, quantiles, chunk_size
        )

    pix = audit("pixel", pixel_vectors, threshold)
    feat = audit("feature", extractor, feature_threshold) if extractor is not None else None
    fig = None
    if figure_path is not None:
        order = torch.argsort(pix.synthetic_distances)[:n_figure_pairs]
        fig = plot_closest_pairs(
            syn_img[order],
            train_img[pix.synthetic_nearest[order]],
            pix.synthetic_distances[order],
            figure_path,
            synthetic_indices=order,
            train_indices=pix.synthetic_nearest[order],
            threshold=pix.threshold,
        )
    logger.info(
        "memorization audit: %d/%d synthetic images flagged in pixel space (threshold %.4g)",
        len(pix.flagged),
        syn_img.shape[0],
        pix.threshold,
    )
    return MemorizationReport(pixel=pix, feature=feat, figure_path=fig)


def plot_closest_pairs(
    synthetic: torch.Tensor,
    nearest_train: torch.Tensor,
    distances: torch.Tensor,
    path: str | Path,
    synthetic_indices: torch.Tensor | None = None,
    train_indices: torch.Tensor | None = None,
    threshold: float | None = None,
) -> Path:
    """Save a figure with one row per pair: synthetic image | nearest training image, titled with the distance.

    Args:
        synthetic: ``(k, C, H, W)`` images in ``[0, 1]`` (3D volumes: the middle slice of the last axis is shown).
        nearest_train: ``(k, C, H, W)`` matched training images.
        distances: ``(k,)`` distances.
        path: PNG destination.
        synthetic_indices: indices shown in the titles.
        train_indices: indices shown in the titles.
        threshold: flagged pairs (distance below it) get a red title.

    Returns:
        the PNG path.
    """
    from matplotlib.figure import Figure  # lazy: matplotlib is only needed for the figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    k = synthetic.shape[0]
    fig = Figure(figsize=(4.0, 2.0 * max(k, 1)))
    axes = fig.subplots(max(k, 1), 2, squeeze=False)

    def _show(ax, img: torch.Tensor) -> None:
        img = img.detach().cpu().float()
        while img.ndim > 3:
            img = img[..., img.shape[-1] // 2]
        arr = img[0].numpy() if img.shape[0] == 1 else img[:3].permute(1, 2, 0).numpy()
        ax.imshow(arr, cmap="gray", vmin=0.0, vmax=1.0)
        ax.set_axis_off()

    for r in range(k):
        _show(axes[r, 0], synthetic[r])
        _show(axes[r, 1], nearest_train[r])
        d = float(distances[r])
        si = int(synthetic_indices[r]) if synthetic_indices is not None else r
        ti = int(train_indices[r]) if train_indices is not None else r
        color = "red" if threshold is not None and d < threshold else "black"
        axes[r, 0].set_title(f"synthetic #{si}", fontsize=8)
        axes[r, 1].set_title(f"train #{ti}  d={d:.4f}", fontsize=8, color=color)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
