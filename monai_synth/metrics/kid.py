"""Kernel Inception Distance (KID).

Binkowski et al., "Demystifying MMD GANs", ICLR 2018, Sec. 4 / App. D: the squared maximum mean discrepancy
between feature distributions with the cubic polynomial kernel

    k(x, y) = (x . y / d + 1)^3                                              (d = feature dimension)

estimated without bias (Gretton et al. 2012, Eq. 3):

    MMD_u^2 = 1/(m(m-1)) sum_{i!=j} k(x_i, x_j) + 1/(m(m-1)) sum_{i!=j} k(y_i, y_j) - 2/m^2 sum_{i,j} k(x_i, y_j)

averaged over ``num_subsets`` random subsets of ``subset_size`` vectors drawn without replacement from each set
(the protocol of the reference implementation and torch-fidelity). Unlike FID, the estimator is unbiased, so
it is better suited to small samples; it can be slightly negative when the distributions match.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from monai.metrics.metric import Metric

__all__ = ["KIDMetric", "KIDResult", "compute_kid", "mmd2_unbiased", "polynomial_kernel"]


@dataclass(frozen=True)
class KIDResult:
    """KID estimate.

    Attributes:
        mean: mean of the unbiased MMD^2 estimates over the subsets.
        std: standard deviation over the subsets (0 with a single subset).
        subset_size: vectors per subset actually used.
        num_subsets: number of subsets.
    """

    mean: float
    std: float
    subset_size: int
    num_subsets: int


def polynomial_kernel(
    x: torch.Tensor, y: torch.Tensor, degree: int = 3, gamma: float | None = None, coef0: float = 1.0
) -> torch.Tensor:
    """Polynomial kernel ``(gamma x . y + coef0)^degree`` with ``gamma = 1 / d`` by default (Binkowski et al. 2018).

    Args:
        x: ``(m, d)``.
        y: ``(n, d)``.
        degree: polynomial degree.
        gamma: scale of the inner product; ``None`` means ``1 / d``.
        coef0: additive constant.

    Returns:
        ``(m, n)`` kernel matrix.
    """
    g = 1.0 / x.shape[1] if gamma is None else gamma
    return (g * (x @ y.T) + coef0) ** degree


def mmd2_unbiased(
    x: torch.Tensor, y: torch.Tensor, degree: int = 3, gamma: float | None = None, coef0: float = 1.0
) -> torch.Tensor:
    """Unbiased MMD^2 estimate between samples ``x`` (m, d) and ``y`` (n, d) with :func:`polynomial_kernel`.

    Returns:
        0-d float64 tensor.

    Raises:
        ValueError: fewer than 2 samples in a set.
    """
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise ValueError(f"unbiased MMD^2 needs at least 2 samples per set, got {m} and {n}.")
    x, y = x.double(), y.double()
    k_xx = polynomial_kernel(x, x, degree, gamma, coef0)
    k_yy = polynomial_kernel(y, y, degree, gamma, coef0)
    k_xy = polynomial_kernel(x, y, degree, gamma, coef0)
    term_xx = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    term_yy = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return term_xx + term_yy - 2.0 * k_xy.mean()


def compute_kid(
    features_a: torch.Tensor | np.ndarray,
    features_b: torch.Tensor | np.ndarray,
    subset_size: int = 1000,
    num_subsets: int = 100,
    seed: int = 0,
    degree: int = 3,
) -> KIDResult:
    """KID between two sets of feature vectors, averaged over random subsets (Binkowski et al. 2018).

    Args:
        features_a: ``(N_a, D)`` features.
        features_b: ``(N_b, D)`` features.
        subset_size: vectors per subset; reduced to ``min(N_a, N_b)`` when larger (logged in the result).
        num_subsets: number of random subsets.
        seed: seed of the subset draws (same seed -> same value).
        degree: polynomial kernel degree (3 in the paper).

    Returns:
        :class:`KIDResult` with mean and std over subsets.

    Raises:
        ValueError: bad shapes, fewer than 2 vectors, or non-positive ``subset_size``/``num_subsets``.
    """
    fa = torch.as_tensor(np.asarray(features_a)) if isinstance(features_a, np.ndarray) else torch.as_tensor(features_a)
    fb = torch.as_tensor(np.asarray(features_b)) if isinstance(features_b, np.ndarray) else torch.as_tensor(features_b)
    for name, f in (("features_a", fa), ("features_b", fb)):
        if f.ndim != 2:
            raise ValueError(f"`{name}` must be (number of images, number of features), got shape {tuple(f.shape)}.")
    if fa.shape[1] != fb.shape[1]:
        raise ValueError(f"feature dimensions differ: {fa.shape[1]} vs {fb.shape[1]}.")
    if subset_size < 2 or num_subsets < 1:
        raise ValueError(f"`subset_size` must be >= 2 and `num_subsets` >= 1, got {subset_size} and {num_subsets}.")
    size = min(subset_size, fa.shape[0], fb.shape[0])
    if size < 2:
        raise ValueError(f"KID needs at least 2 feature vectors per set, got {fa.shape[0]} and {fb.shape[0]}.")
    fa, fb = fa.detach().double().cpu(), fb.detach().double().cpu()
    gen = torch.Generator().manual_seed(int(seed))
    values = torch.empty(num_subsets, dtype=torch.float64)
    for s in range(num_subsets):
        ia = torch.randperm(fa.shape[0], generator=gen)[:size]
        ib = torch.randperm(fb.shape[0], generator=gen)[:size]
        values[s] = mmd2_unbiased(fa[ia], fb[ib], degree=degree)
    std = float(values.std(unbiased=False)) if num_subsets > 1 else 0.0
    return KIDResult(mean=float(values.mean()), std=std, subset_size=size, num_subsets=num_subsets)


class KIDMetric(Metric):
    """MONAI-style metric object: ``KIDMetric(subset_size, num_subsets, seed)(y_pred_features, y_features)``.

    Returns a ``(2,)`` tensor ``[mean, std]``; use :func:`compute_kid` for the full :class:`KIDResult`.
    """

    def __init__(self, subset_size: int = 1000, num_subsets: int = 100, seed: int = 0) -> None:
        super().__init__()
        self.subset_size = subset_size
        self.num_subsets = num_subsets
        self.seed = seed

    def __call__(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        r = compute_kid(y_pred, y, self.subset_size, self.num_subsets, self.seed)
        return torch.tensor([r.mean, r.std], dtype=torch.float64)
