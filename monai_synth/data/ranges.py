"""The one mapping between stored intensities in [0, 1] and the diffusion models' [-1, 1] (Ho et al. 2020, Sec. 4)."""

from __future__ import annotations

import numpy as np
import torch
from monai.config import NdarrayOrTensor

__all__ = ["from_unit_range", "to_unit_range"]


def to_unit_range(x: NdarrayOrTensor, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """Map ``value_range`` linearly to [0, 1] and clip (model outputs in [-1, 1] -> ``(x + 1) / 2``)."""
    arr = x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)
    lo, hi = value_range
    return np.clip((arr - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def from_unit_range(x: NdarrayOrTensor, value_range: tuple[float, float] = (-1.0, 1.0)) -> NdarrayOrTensor:
    """Map [0, 1] linearly to ``value_range`` (stored images -> model inputs: ``2 x - 1``); keeps the array type."""
    lo, hi = value_range
    return x * (hi - lo) + lo
