"""Pairwise image similarity between two image sets, or within one set (diversity).

* SSIM — Wang et al., "Image quality assessment: from error visibility to structural similarity", IEEE TIP 2004
  (seed 000 Sec. 4.2): computed with MONAI's :class:`monai.metrics.SSIMMetric` (Gaussian window 11, sigma 1.5,
  k1 = 0.01, k2 = 0.03, ``data_range=1``).
* MS-SSIM — Wang, Simoncelli & Bovik, "Multiscale structural similarity for image quality assessment",
  Asilomar 2003: MONAI's :class:`monai.metrics.MultiScaleSSIMMetric`. MONAI requires
  ``size // (n_scales - 1)^2 > kernel_size - 1``; :func:`ms_ssim_params_for_size` picks the most scales (<= 5)
  and then the largest kernel in (11, 9, 7) that fit, with the first ``n_scales`` standard weights renormalised
  to sum to 1. 28x28 images get 3 scales with a 7x7 window; the minimum size is 28 px.
* MSE — seed 003 (Table 1) reports the MSE between real and synthetic images without saying how images are paired;
  we report the mean squared error over random pairs (:func:`mse_between`) and, separately, between the two set
  means (:func:`mse_of_means`). Values are in ``[0, 1]`` intensity units; multiply by 255^2 for 8-bit units.

Across-set scores use ``n_pairs`` random pairs ``(a_i, b_j)`` drawn with a seeded generator; within-set scores
use random pairs of *distinct* images (a low within-set SSIM/MS-SSIM means a diverse set; mode collapse raises it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.metrics import MultiScaleSSIMMetric, SSIMMetric

from monai_synth.metrics.features import as_float_images

__all__ = [
    "MS_SSIM_WEIGHTS",
    "PairwiseScore",
    "ms_ssim_between",
    "ms_ssim_params_for_size",
    "ms_ssim_within",
    "mse_between",
    "mse_of_means",
    "reconstruction_quality",
    "sample_pairs",
    "ssim_between",
    "ssim_within",
]

#: Standard 5-scale MS-SSIM exponents (Wang et al. 2003, Sec. 3.1).
MS_SSIM_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_CHUNK = 256


@dataclass(frozen=True)
class PairwiseScore:
    """Mean/std of a per-pair score.

    Attributes:
        mean: mean over pairs.
        std: standard deviation over pairs.
        n_pairs: number of pairs.
        values: ``(n_pairs,)`` per-pair values.
    """

    mean: float
    std: float
    n_pairs: int
    values: torch.Tensor


def _summary(values: torch.Tensor) -> PairwiseScore:
    values = values.reshape(-1).double()
    std = float(values.std(unbiased=False)) if values.numel() > 1 else 0.0
    return PairwiseScore(mean=float(values.mean()), std=std, n_pairs=int(values.numel()), values=values)


def sample_pairs(n_a: int, n_b: int | None, n_pairs: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``n_pairs`` random index pairs.

    Args:
        n_a: size of the first set.
        n_b: size of the second set, or ``None`` for pairs of distinct images within the first set.
        n_pairs: number of pairs (drawn with replacement across pairs).
        seed: generator seed.

    Returns:
        ``(i, j)`` index tensors of length ``n_pairs``.

    Raises:
        ValueError: empty sets, fewer than 2 images for within-set pairs, or ``n_pairs < 1``.
    """
    if n_pairs < 1:
        raise ValueError(f"`n_pairs` must be >= 1, got {n_pairs}.")
    gen = torch.Generator().manual_seed(int(seed))
    if n_b is None:
        if n_a < 2:
            raise ValueError(f"within-set pairs need at least 2 images, got {n_a}.")
        i = torch.randint(n_a, (n_pairs,), generator=gen)
        j = torch.randint(n_a - 1, (n_pairs,), generator=gen)
        return i, j + (j >= i).long()
    if n_a < 1 or n_b < 1:
        raise ValueError(f"both sets must be non-empty, got sizes {n_a} and {n_b}.")
    return torch.randint(n_a, (n_pairs,), generator=gen), torch.randint(n_b, (n_pairs,), generator=gen)


def _check_same_shape(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(
            f"image shapes differ: {tuple(a.shape[1:])} vs {tuple(b.shape[1:])}; resize both sets to one size first."
        )


def _paired(metric, a: torch.Tensor, b: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    out = []
    for s in range(0, i.numel(), _CHUNK):
        out.append(metric(y_pred=a[i[s : s + _CHUNK]], y=b[j[s : s + _CHUNK]]).reshape(-1))
    return torch.cat(out)


def _ssim_metric(images: torch.Tensor, kernel_size: int) -> SSIMMetric:
    spatial = images.shape[2:]
    if min(spatial) < kernel_size:
        raise ValueError(
            f"SSIM window `kernel_size`={kernel_size} is larger than the images {tuple(spatial)}; "
            f"use kernel_size <= {min(spatial)} (odd, e.g. 7)."
        )
    return SSIMMetric(spatial_dims=len(spatial), data_range=1.0, win_size=kernel_size, reduction="none")


def ssim_between(
    images_a: torch.Tensor | np.ndarray,
    images_b: torch.Tensor | np.ndarray,
    n_pairs: int = 1000,
    seed: int = 0,
    kernel_size: int = 11,
) -> PairwiseScore:
    """SSIM over ``n_pairs`` random pairs (one image from each set), images in ``[0, 1]`` or uint8."""
    a, b = as_float_images(images_a, "images_a"), as_float_images(images_b, "images_b")
    _check_same_shape(a, b)
    i, j = sample_pairs(a.shape[0], b.shape[0], n_pairs, seed)
    return _summary(_paired(_ssim_metric(a, kernel_size), a, b, i, j))


def ssim_within(
    images: torch.Tensor | np.ndarray, n_pairs: int = 1000, seed: int = 0, kernel_size: int = 11
) -> PairwiseScore:
    """SSIM over random pairs of distinct images of one set (diversity; lower = more diverse)."""
    x = as_float_images(images)
    i, j = sample_pairs(x.shape[0], None, n_pairs, seed)
    return _summary(_paired(_ssim_metric(x, kernel_size), x, x, i, j))


def ms_ssim_params_for_size(
    spatial_size: Sequence[int], kernel_sizes: Sequence[int] = (11, 9, 7)
) -> tuple[int, tuple[float, ...]]:
    """Choose an MS-SSIM kernel size and scale weights that MONAI accepts for images of ``spatial_size``.

    Most scales first (5, 4, 3), then the largest kernel; the weights are the first ``n`` of
    :data:`MS_SSIM_WEIGHTS` renormalised to sum 1. 256 px -> (11, 5 scales); 64 px -> (7, 4 scales);
    28 px -> (7, 3 scales).

    Args:
        spatial_size: image spatial shape.
        kernel_sizes: candidate kernel sizes, tried largest first.

    Returns:
        ``(kernel_size, weights)``.

    Raises:
        ValueError: when even 3 scales with the smallest kernel do not fit (images smaller than 28 px by default).
    """
    smallest = min(int(s) for s in spatial_size)
    for n_scales in (5, 4, 3):
        for k in sorted(kernel_sizes, reverse=True):
            if smallest // (n_scales - 1) ** 2 > k - 1:
                w = MS_SSIM_WEIGHTS[:n_scales]
                total = sum(w)
                return int(k), tuple(float(v) / total for v in w)
    k_min = min(kernel_sizes)
    raise ValueError(
        f"MS-SSIM needs images of at least {4 * (k_min - 1) + 4} px (3 scales, kernel {k_min}); "
        f"got spatial size {tuple(spatial_size)}. Use SSIM instead, or resize the images."
    )


def _ms_ssim_metric(
    images: torch.Tensor, kernel_size: int | None, weights: Sequence[float] | None
) -> MultiScaleSSIMMetric:
    spatial = images.shape[2:]
    if kernel_size is None or weights is None:
        auto_k, auto_w = ms_ssim_params_for_size(spatial)
        kernel_size = auto_k if kernel_size is None else kernel_size
        weights = auto_w if weights is None else weights
    return MultiScaleSSIMMetric(
        spatial_dims=len(spatial), data_range=1.0, kernel_size=kernel_size, weights=tuple(weights), reduction="none"
    )


def ms_ssim_between(
    images_a: torch.Tensor | np.ndarray,
    images_b: torch.Tensor | np.ndarray,
    n_pairs: int = 1000,
    seed: int = 0,
    kernel_size: int | None = None,
    weights: Sequence[float] | None = None,
) -> PairwiseScore:
    """MS-SSIM over random pairs across two sets; ``None`` kernel/weights come from :func:`ms_ssim_params_for_size`."""
    a, b = as_float_images(images_a, "images_a"), as_float_images(images_b, "images_b")
    _check_same_shape(a, b)
    i, j = sample_pairs(a.shape[0], b.shape[0], n_pairs, seed)
    return _summary(_paired(_ms_ssim_metric(a, kernel_size, weights), a, b, i, j))


def ms_ssim_within(
    images: torch.Tensor | np.ndarray,
    n_pairs: int = 1000,
    seed: int = 0,
    kernel_size: int | None = None,
    weights: Sequence[float] | None = None,
) -> PairwiseScore:
    """MS-SSIM over random pairs of distinct images of one set (diversity, as in GAN/diffusion papers)."""
    x = as_float_images(images)
    i, j = sample_pairs(x.shape[0], None, n_pairs, seed)
    return _summary(_paired(_ms_ssim_metric(x, kernel_size, weights), x, x, i, j))


def mse_between(
    images_a: torch.Tensor | np.ndarray, images_b: torch.Tensor | np.ndarray, n_pairs: int = 1000, seed: int = 0
) -> PairwiseScore:
    """Mean squared error over random pairs ``(a_i, b_j)``: mean over pairs of ``mean((a_i - b_j)^2)``."""
    a, b = as_float_images(images_a, "images_a"), as_float_images(images_b, "images_b")
    _check_same_shape(a, b)
    i, j = sample_pairs(a.shape[0], b.shape[0], n_pairs, seed)
    values = ((a[i].double() - b[j].double()) ** 2).flatten(1).mean(dim=1)
    return _summary(values)


def mse_of_means(images_a: torch.Tensor | np.ndarray, images_b: torch.Tensor | np.ndarray) -> float:
    """Mean squared error between the mean images of the two sets (a set-level intensity/anatomy shift)."""
    a, b = as_float_images(images_a, "images_a"), as_float_images(images_b, "images_b")
    _check_same_shape(a, b)
    return float(((a.double().mean(dim=0) - b.double().mean(dim=0)) ** 2).mean())


def reconstruction_quality(
    images: torch.Tensor | np.ndarray, reconstructions: torch.Tensor | np.ndarray, kernel_size: int = 11
) -> dict[str, float]:
    """Mean PSNR (dB, ``data_range=1``), SSIM and MS-SSIM of each image against its own reconstruction.

    Images in ``[0, 1]`` (or uint8), same shape, paired by index; MS-SSIM scales from :func:`ms_ssim_params_for_size`
    (``nan`` when the images are too small for it). The PSNR is ``10 log10(1 / MSE)`` per image, then averaged.
    """
    a, b = as_float_images(images, "images"), as_float_images(reconstructions, "reconstructions")
    if a.shape != b.shape:
        raise ValueError(f"images {tuple(a.shape)} and reconstructions {tuple(b.shape)} must have the same shape.")
    idx = torch.arange(a.shape[0])
    mse = ((a.double() - b.double()) ** 2).flatten(1).mean(dim=1).clamp_min(1e-12)
    out = {
        "psnr": float((10.0 * torch.log10(1.0 / mse)).mean()),
        "ssim": float(_paired(_ssim_metric(a, min(kernel_size, min(a.shape[2:]) // 2 * 2 - 1)), a, b, idx, idx).mean()),
        "ms_ssim": float("nan"),
    }
    try:
        out["ms_ssim"] = float(_paired(_ms_ssim_metric(a, None, None), a, b, idx, idx).mean())
    except ValueError:
        pass
    return out
