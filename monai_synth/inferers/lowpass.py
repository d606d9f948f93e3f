"""Linear low-pass filter ``phi_N`` used by ILVR-style guidance.

ILVR (Choi et al., "ILVR: Conditioning Method for Denoising Diffusion Probabilistic Models", ICCV 2021, Eq. 3-4)
and its multi-condition extension (Krishna et al., seed 001, Eqs. 3-5) need a *linear* low-pass filter
``phi_N``: downsample by an integer factor ``N`` and upsample back to the original size.  ILVR uses an
anti-aliased bicubic resize; plain nearest/bilinear downsampling aliases high frequencies into the
low band and is known to damage the guided samples, so it is not offered.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["LowPassFilter", "lowpass_filter"]

# (downsample mode, upsample mode, antialias on downsample) per number of spatial dims.
# 2D: ILVR's anti-aliased bicubic. 1D/3D: torch has no anti-aliased (bi/tri)cubic resize, so the
# downsample is an exact box average ("area", itself an anti-aliasing filter) and the upsample is linear.
_MODES: dict[int, tuple[str, str, bool]] = {
    1: ("area", "linear", False),
    2: ("bicubic", "bicubic", True),
    3: ("area", "trilinear", False),
}


def lowpass_filter(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Apply ``phi_N``: downsample every spatial axis by ``factor`` and upsample back (seed 001, Eq. 3).

    The filter is linear in ``x`` (``phi(a x + b y) = a phi(x) + b phi(y)``), maps a constant image to the
    same constant, and is the identity for ``factor == 1``.

    Args:
        x: tensor of shape ``(batch, channels, *spatial)`` with 1, 2 or 3 spatial dims.
        factor: the downsampling factor ``N`` (positive integer dividing every spatial size).

    Returns:
        The low-pass filtered tensor, same shape and dtype as ``x``.

    Raises:
        ValueError: when ``factor`` is not a positive integer, ``x`` has an unsupported number of
            dimensions, or a spatial size is not divisible by ``factor``.
    """
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"`factor` (N) must be a positive integer, got {factor!r}.")
    spatial_dims = x.ndim - 2
    if spatial_dims not in _MODES:
        raise ValueError(
            f"`x` must have shape (batch, channels, *spatial) with 1-3 spatial dims, got shape {tuple(x.shape)}."
        )
    spatial = tuple(int(s) for s in x.shape[2:])
    bad = [s for s in spatial if s % factor != 0]
    if bad:
        raise ValueError(
            f"`factor` (N) = {factor} must divide every spatial size of `x` {spatial}; "
            f"choose N among the common divisors (e.g. a power of two that divides {min(spatial)})."
        )
    if factor == 1:
        return x
    down_mode, up_mode, antialias = _MODES[spatial_dims]
    dtype = x.dtype
    xf = x if x.is_floating_point() else x.float()
    small = tuple(s // factor for s in spatial)
    if antialias:
        down = F.interpolate(xf, size=small, mode=down_mode, align_corners=False, antialias=True)
    else:
        down = F.interpolate(xf, size=small, mode=down_mode)
    up = F.interpolate(down, size=spatial, mode=up_mode, align_corners=False)
    return up.to(dtype) if up.dtype != dtype and x.is_floating_point() else up


class LowPassFilter:
    """Callable form of :func:`lowpass_filter` with a fixed factor ``N`` (seed 001, Eq. 3: ``phi_N``).

    Args:
        factor: the downsampling factor ``N`` (positive integer).

    Raises:
        ValueError: when ``factor`` is not a positive integer.
    """

    def __init__(self, factor: int) -> None:
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
            raise ValueError(f"`factor` (N) must be a positive integer, got {factor!r}.")
        self.factor = factor

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return lowpass_filter(x, self.factor)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(factor={self.factor})"
