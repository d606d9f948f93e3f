"""ConvNeXt classifier (Liu et al. 2022, "A ConvNet for the 2020s", arXiv:2201.03545).

MONAI ships no ConvNeXt and torchvision is not a dependency, so this is a compact re-implementation for any
``spatial_dims``. Seed 001 trains a ConvNeXt mammography classifier (Table 1).

Block (paper Fig. 4, Sec. 2): depthwise 7x7 conv -> LayerNorm -> Linear(d, 4d) -> GELU -> Linear(4d, d)
-> layer scale gamma -> stochastic depth -> residual add. Patchify stem: conv k=p, stride=p + LayerNorm.
Between stages: LayerNorm + conv k=2, stride=2. Head: global average pool -> LayerNorm -> Linear.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.layers import Conv, DropPath

__all__ = ["LayerNormChannelsFirst", "ConvNeXtBlock", "ConvNeXt", "CONVNEXT_PRESETS", "convnext"]

CONVNEXT_PRESETS: dict[str, dict] = {
    # the paper's ConvNeXt-T (Table 1 / Sec. 2.6): C = (96, 192, 384, 768), B = (3, 3, 9, 3); ~28.6M params
    # for 3 input channels and 1000 classes.
    "convnext_tiny": {"depths": (3, 3, 9, 3), "dims": (96, 192, 384, 768), "stem_patch": 4},
    # small variant for 28-64 px inputs (MedMNIST-sized): a 2x2 stem and three stages, so 28 px -> 14 -> 7 -> 3
    # and 64 px -> 32 -> 16 -> 8 (the published 4x stem plus three 2x downsamplings would reduce 28 px to 0).
    "convnext_micro": {"depths": (2, 2, 4), "dims": (32, 64, 128), "stem_patch": 2},
}


class LayerNormChannelsFirst(nn.Module):
    """LayerNorm over the channel axis of a (B, C, *spatial) tensor (the paper's "channels_first" LN)."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(num_channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.movedim(1, -1)).movedim(-1, 1)


class ConvNeXtBlock(nn.Module):
    """One ConvNeXt block: dwconv 7x7, LN, inverted bottleneck MLP (x4, GELU), layer scale, drop path.

    Args:
        spatial_dims: 1, 2 or 3.
        dim: channels.
        drop_path: stochastic depth probability of skipping the residual branch.
        layer_scale_init: initial value of the per-channel scale gamma (paper: 1e-6); <= 0 disables it.
        mlp_ratio: expansion of the inverted bottleneck (paper: 4).
        kernel_size: depthwise kernel size (paper: 7).
    """

    def __init__(
        self,
        spatial_dims: int,
        dim: int,
        drop_path: float = 0.0,
        layer_scale_init: float = 1e-6,
        mlp_ratio: int = 4,
        kernel_size: int = 7,
    ) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.dwconv = conv(dim, dim, kernel_size=kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, mlp_ratio * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(mlp_ratio * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale_init)) if layer_scale_init > 0 else None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).movedim(1, -1)  # channels last for LN and the pointwise Linear layers
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        if self.gamma is not None:
            y = self.gamma * y
        return x + self.drop_path(y.movedim(-1, 1))


class ConvNeXt(nn.Module):
    """ConvNeXt classifier (Liu et al. 2022).

    Args:
        spatial_dims: 1, 2 or 3.
        in_channels: input channels.
        num_classes: output logits.
        depths: blocks per stage (ConvNeXt-T: (3, 3, 9, 3)).
        dims: channels per stage, same length as ``depths`` (ConvNeXt-T: (96, 192, 384, 768)).
        stem_patch: patch size = stride of the patchify stem (paper: 4).
        drop_path_rate: stochastic depth rate, increased linearly from 0 to this value over all blocks.
        layer_scale_init: initial layer scale (paper: 1e-6).
        head_init_scale: multiplies the initial head weights and bias (paper: 1.0).
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        num_classes: int = 2,
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (96, 192, 384, 768),
        stem_patch: int = 4,
        drop_path_rate: float = 0.0,
        layer_scale_init: float = 1e-6,
        head_init_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"`spatial_dims` must be one of [1, 2, 3], got {spatial_dims!r}.")
        if len(depths) != len(dims) or not depths:
            raise ValueError(f"`depths` and `dims` must be non-empty and of equal length, got {depths} and {dims}.")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"`drop_path_rate` must be in [0, 1), got {drop_path_rate}.")
        if in_channels < 1 or num_classes < 1 or stem_patch < 1:
            raise ValueError(
                f"`in_channels`, `num_classes` and `stem_patch` must be >= 1, got {in_channels}, {num_classes}, "
                f"{stem_patch}."
            )
        conv = Conv[Conv.CONV, spatial_dims]
        self.downsample_layers = nn.ModuleList(
            [
                nn.Sequential(
                    conv(in_channels, dims[0], kernel_size=stem_patch, stride=stem_patch),
                    LayerNormChannelsFirst(dims[0]),
                )
            ]
        )
        for i in range(len(dims) - 1):
            self.downsample_layers.append(
                nn.Sequential(LayerNormChannelsFirst(dims[i]), conv(dims[i], dims[i + 1], kernel_size=2, stride=2))
            )
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.stages = nn.ModuleList()
        cur = 0
        for depth, dim in zip(depths, dims):
            self.stages.append(
                nn.Sequential(
                    *[ConvNeXtBlock(spatial_dims, dim, rates[cur + j], layer_scale_init) for j in range(depth)]
                )
            )
            cur += depth
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], num_classes)
        self.apply(self._init_weights)
        with torch.no_grad():
            self.head.weight.mul_(head_init_scale)
            self.head.bias.mul_(head_init_scale)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled, normalised features (B, dims[-1])."""
        for down, stage in zip(self.downsample_layers, self.stages):
            x = stage(down(x))
        return self.norm(x.mean(dim=tuple(range(2, x.ndim))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def convnext(
    preset: str = "convnext_micro", spatial_dims: int = 2, in_channels: int = 1, num_classes: int = 2, **kwargs
) -> ConvNeXt:
    """Build a ConvNeXt from a named preset (see ``CONVNEXT_PRESETS``); ``kwargs`` override preset entries."""
    if preset not in CONVNEXT_PRESETS:
        raise ValueError(f"`preset` must be one of {sorted(CONVNEXT_PRESETS)}, got {preset!r}.")
    args = {**CONVNEXT_PRESETS[preset], **kwargs}
    return ConvNeXt(spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes, **args)
