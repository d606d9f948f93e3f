"""Helpers on ``torch.nn.Module`` objects shared by every layer."""

from __future__ import annotations

import torch

__all__ = ["unwrap_model"]


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """Strip ``DistributedDataParallel`` / ``DataParallel`` / ``AveragedModel`` wrappers (their ``.module``)."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return model
