"""Classifier factory over MONAI's ResNets and the ConvNeXt presets, and a local-weights loader."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import torch.nn as nn

from .convnext import CONVNEXT_PRESETS, convnext

__all__ = ["CLASSIFIER_NAMES", "build_classifier", "load_classifier_weights"]

logger = logging.getLogger(__name__)

_RESNETS = ("resnet10", "resnet18", "resnet34", "resnet50")
CLASSIFIER_NAMES = tuple(sorted((*_RESNETS, *CONVNEXT_PRESETS)))


def load_classifier_weights(network: nn.Module, path: str | os.PathLike, strict: bool = True) -> nn.Module:
    """Load a LOCAL state dict into ``network`` (``torch.load(weights_only=True)``; nothing is downloaded).

    A checkpoint holding ``{"state_dict": ...}`` or ``{"model": ...}`` is unwrapped, and a ``module.`` prefix
    (DataParallel) is stripped.

    Args:
        network: the model to fill.
        path: a ``.pt``/``.pth`` file written by ``torch.save(model.state_dict(), path)``.
        strict: require identical key sets and shapes.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: when the file is not a state dict, or keys/shapes do not match (the message lists them).
    """
    from monai_synth.utils.io import safe_torch_load

    if not os.path.isfile(path):
        raise FileNotFoundError(f"Pretrained weights file {str(path)!r} does not exist; give a local state-dict file.")
    state = safe_torch_load(path)
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping):
        raise ValueError(f"{str(path)!r} does not hold a state dict (got {type(state).__name__}).")
    state = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in state.items()}
    own = network.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if mismatched or (strict and (missing or unexpected)):
        raise ValueError(
            f"Weights in {str(path)!r} do not match {type(network).__name__}: missing keys {missing[:5]} "
            f"({len(missing)} in all), unexpected keys {unexpected[:5]} ({len(unexpected)}), shape mismatches "
            f"{mismatched[:5]} ({len(mismatched)}). Check `name`, `in_channels` and `num_classes`, or pass "
            "strict=False to ignore missing/unexpected keys."
        )
    network.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    logger.info("loaded classifier weights from %s (%d tensors)", path, len(state))
    return network


def build_classifier(
    name: str = "resnet18",
    spatial_dims: int = 2,
    in_channels: int = 1,
    num_classes: int = 2,
    pretrained_path: str | os.PathLike | None = None,
    **kwargs,
) -> nn.Module:
    """Build a classifier by name.

    ``resnet10/18/34/50`` are MONAI's :class:`monai.networks.nets.ResNet` (He et al. 2016) with the original
    (and torchvision's) stem: 7x7 conv with stride 2 then max pool, which seed 000's torchvision ResNet-18 used.
    MONAI's own default stem stride is 1 (4x the compute at 28 px); pass ``conv1_t_stride=1`` to get it.
    MONAI's MedicalNet download is never used. ``convnext_tiny`` and
    ``convnext_micro`` are :class:`ConvNeXt` presets (Liu et al. 2022).

    Args:
        name: one of ``CLASSIFIER_NAMES``.
        spatial_dims: 2 for images, 3 for volumes.
        in_channels: input channels (1 for grey-scale X-ray).
        num_classes: number of output logits.
        pretrained_path: optional local state-dict file, loaded strictly with ``weights_only=True``.
        kwargs: passed to the network constructor (e.g. ``conv1_t_stride=2``, ``drop_path_rate=0.1``).

    Raises:
        ValueError: unknown name or invalid sizes; weights that do not match.
        FileNotFoundError: ``pretrained_path`` missing.
    """
    if name not in CLASSIFIER_NAMES:
        raise ValueError(f"`name` must be one of {list(CLASSIFIER_NAMES)}, got {name!r}.")
    if in_channels < 1 or num_classes < 1:
        raise ValueError(f"`in_channels` and `num_classes` must be >= 1, got {in_channels} and {num_classes}.")
    if name in _RESNETS:
        from monai.networks.nets import resnet

        kwargs = {"conv1_t_stride": 2, **kwargs}  # He et al. 2016 / torchvision stem (MONAI's default is 1)
        net = getattr(resnet, name)(
            pretrained=False, spatial_dims=spatial_dims, n_input_channels=in_channels, num_classes=num_classes, **kwargs
        )
    else:
        net = convnext(name, spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes, **kwargs)
    if pretrained_path is not None:
        load_classifier_weights(net, pretrained_path, strict=True)
    return net
