"""In-memory training items of the generator (images or latents) as a torch dataset."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from monai_synth.data.ranges import from_unit_range

__all__ = ["DiffusionItemsDataset"]


class DiffusionItemsDataset(torch.utils.data.Dataset):
    """In-memory items ``{"image": (C, H, W) in [0, 1], "label"}`` -> the model's [-1, 1], optionally flipped.

    Args:
        items: the training items.
        hflip: random horizontal flips (probability 0.5).
        seed: seed of the flips.
        unit_range: the images are in [0, 1] and are mapped to [-1, 1]; ``False`` keeps them (latents).
    """

    def __init__(self, items: Sequence[Mapping[str, Any]], hflip: bool, seed: int, unit_range: bool = True) -> None:
        self.images = torch.stack([torch.as_tensor(np.asarray(it["image"]), dtype=torch.float32) for it in items])
        if unit_range:
            self.images = from_unit_range(self.images)
        self.labels = torch.as_tensor([int(it["label"]) for it in items], dtype=torch.long)
        self.hflip = hflip
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x = self.images[i]
        if self.hflip and self.rng.random() < 0.5:
            x = x.flip(-1)
        return {"image": x, "label": self.labels[i]}
