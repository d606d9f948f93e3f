"""Fréchet Inception Distance on feature vectors or images, built on :mod:`monai.metrics.fid`.

Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium", NeurIPS 2017:

    FID = ||m - m_w||_2^2 + Tr(C + C_w - 2 (C C_w)^{1/2})                 (seed 000, Sec. 4.2)

The mean/covariance estimates and the matrix square root are MONAI's (``_cov``, ``compute_frechet_distance``,
which uses ``scipy.linalg.sqrtm``); this module adds cached statistics (so the real set is processed once) and an
image-level entry point with a pluggable :class:`~monai_synth.metrics.features.FeatureExtractor`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from monai.metrics.fid import FIDMetric as _MonaiFIDMetric
from monai.metrics.fid import _cov, compute_frechet_distance

__all__ = ["FeatureStatistics", "FIDMetric", "compute_fid", "frechet_distance"]


def _as_features(features: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    f = torch.as_tensor(np.asarray(features)) if isinstance(features, np.ndarray) else torch.as_tensor(features)
    if f.ndim != 2:
        raise ValueError(f"`{name}` must be (number of images, number of features), got shape {tuple(f.shape)}.")
    if f.shape[0] < 2:
        raise ValueError(f"`{name}` needs at least 2 feature vectors to estimate a covariance, got {f.shape[0]}.")
    return f.detach().double().cpu()


@dataclass(frozen=True)
class FeatureStatistics:
    """Mean and covariance of a set of feature vectors (the Gaussian fitted by FID).

    Attributes:
        mu: ``(D,)`` mean, float64.
        sigma: ``(D, D)`` unbiased covariance (divides by ``n - 1``), float64.
        n: number of feature vectors.
    """

    mu: torch.Tensor
    sigma: torch.Tensor
    n: int

    @classmethod
    def from_features(cls, features: torch.Tensor | np.ndarray) -> FeatureStatistics:
        """Fit mean and covariance to ``(N, D)`` features (MONAI's ``_cov``, ``rowvar=False``)."""
        f = _as_features(features, "features")
        sigma = _cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])
        return cls(mu=f.mean(dim=0), sigma=sigma, n=int(f.shape[0]))


def frechet_distance(stats_a: FeatureStatistics, stats_b: FeatureStatistics) -> float:
    """Fréchet distance between two fitted Gaussians (Heusel et al. 2017, Eq. in seed 000 Sec. 4.2).

    Args:
        stats_a: statistics of the first set.
        stats_b: statistics of the second set.

    Returns:
        the squared Fréchet distance, clipped at 0 (tiny negative values come from round-off).

    Raises:
        ValueError: feature dimensions differ.
    """
    if stats_a.mu.shape != stats_b.mu.shape:
        raise ValueError(f"feature dimensions differ: {tuple(stats_a.mu.shape)} vs {tuple(stats_b.mu.shape)}.")
    with warnings.catch_warnings():  # MONAI's _sqrtm passes scipy's deprecated `disp` argument
        warnings.filterwarnings("ignore", message=".*`disp` argument is deprecated.*", category=DeprecationWarning)
        value = compute_frechet_distance(stats_a.mu, stats_a.sigma, stats_b.mu, stats_b.sigma)
    return max(float(value), 0.0)


def compute_fid(features_a: torch.Tensor | np.ndarray, features_b: torch.Tensor | np.ndarray) -> float:
    """FID between two sets of feature vectors ``(N_a, D)`` and ``(N_b, D)``.

    Small-sample caveat: the estimate is biased upwards at small N (seed 000 used 1k images per set, 10k is
    the usual recommendation); only compare FIDs computed with the same N and the same extractor.
    """
    return frechet_distance(
        FeatureStatistics.from_features(_as_features(features_a, "features_a")),
        FeatureStatistics.from_features(_as_features(features_b, "features_b")),
    )


class FIDMetric(_MonaiFIDMetric):
    """MONAI's :class:`monai.metrics.FIDMetric` returning a clipped float and validating its inputs.

    ``metric(y_pred_features, y_features)`` with ``(N, D)`` feature tensors.
    """

    def __call__(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return torch.tensor(compute_fid(y_pred, y), dtype=torch.float64)
