"""Shared helpers of the test suite (not a test module): tiny data, tiny networks, array types, shared-data paths.

Test modules import it as ``from helpers import ...``: pytest (``rootdir`` /work/main, default ``prepend`` import
mode) puts ``tests/`` on ``sys.path`` because ``tests/conftest.py`` lives there. Subprocess scripts under
``tests/reliability/scripts`` add ``tests/`` to ``sys.path`` themselves.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor
from monai.networks.nets import DiffusionModelUNet
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

# ------------------------------------------------------------------------------------------------ shared data
# paths relative to the real data folder (the ``shared_data`` fixture of conftest.py)
CT_STUDY = "lung_ct_dicom_lungpetctdx_A0001"
CT_DIR = f"{CT_STUDY}/dicom"
CT_SLICE = f"{CT_DIR}/1-16.dcm"
CT_UID_FIRST = "1.3.6.1.4.1.14519.5.2.1.6655.2359.136943255924913899762603730997"  # VOC box 278,308,360,394
CXR_J2K = "chest_xray_dicom_nema_rg1/RG1_J2KI.dcm"
PNEUMONIAMNIST_NPZ = "pneumoniamnist/pneumoniamnist_reconstructed.npz"


def copy_shared(shared_data: Path, rel: str, dest: Path) -> Path:
    """Copy one shared file into ``dest`` (a folder) and return the copy's path (never touch the original)."""
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / Path(rel).name
    shutil.copyfile(shared_data / rel, out)
    return out


def snapshot(root: Path) -> set[str]:
    """Relative paths of every file (hidden ones included) under ``root``."""
    if not root.exists():
        return set()
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


# ------------------------------------------------------------------------------------------------ array types
# the three input types every transform must keep: name -> (make from an array, expected output type)
TYPES = {
    "numpy": (lambda a: np.asarray(a), np.ndarray),
    "tensor": (lambda a: torch.as_tensor(np.asarray(a)), torch.Tensor),
    "metatensor": (lambda a: MetaTensor(torch.as_tensor(np.asarray(a)), meta={"tag": "kept"}), MetaTensor),
}


def as_numpy(x) -> np.ndarray:
    """A numpy copy of an array, tensor or MetaTensor (detached, on the CPU)."""
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


# ------------------------------------------------------------------------------------------------ tiny data
def tiny_items(n: int, seed: int = 0, size: int = 16) -> list[dict]:
    """Labelled items ``{"image": float32 (1, size, size), "label": 0|1}``; class 1 has a bright central square, so a
    classifier learns it in a few steps."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        y = i % 2
        img = (rng.random((1, size, size)) * 0.3).astype(np.float32)
        if y:
            img[:, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] += 0.6
        out.append({"image": img, "label": y})
    return out


def half_items(n: int = 16, size: int = 8) -> list[dict]:
    """Noise-free items in [0, 1]: class 0 has its top half bright, class 1 its bottom half (diffusion toy data)."""
    items = []
    for i in range(n):
        x = np.zeros((1, size, size), np.float32)
        if i % 2:
            x[:, size // 2 :, :] = 1.0
        else:
            x[:, : size // 2, :] = 1.0
        items.append({"image": x, "label": i % 2})
    return items


def write_medmnist_npz(
    path: Path,
    n: int = 6,
    shape: tuple[int, int] = (4, 5),
    channels: int = 0,
    labels: Sequence[int] | None = None,
    seed: int = 0,
    **override,
) -> dict[str, np.ndarray]:
    """Write a MedMNIST-layout ``.npz`` (``{split}_images`` uint8 ``(n, H, W[, C])``, ``{split}_labels`` ``(n, 1)``).

    ``labels`` default to ``i % 2``; ``override`` replaces arrays (``None`` drops one). Returns the arrays written.
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2 if labels is None else np.asarray(labels)
    full_shape = (n, *shape) + ((channels,) if channels else ())
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = rng.integers(0, 256, full_shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = labels.reshape(n, 1).astype(np.uint8)
    arrays.update(override)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return arrays


# ------------------------------------------------------------------------------------------------ tiny models
def tiny_unet(
    num_classes: int | None = 2, in_channels: int = 1, seed: int = 0, channels: tuple[int, ...] = (8, 8)
) -> DiffusionModelUNet:
    """A ~20k-parameter 2D ``DiffusionModelUNet`` (no attention levels; ``num_classes + 1`` class embeddings, the
    last one the null class of classifier-free guidance; ``None``: unconditional), seeded."""
    torch.manual_seed(seed)
    return DiffusionModelUNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=in_channels,
        channels=channels,
        attention_levels=(False,) * len(channels),
        num_res_blocks=1,
        norm_num_groups=8,
        num_head_channels=8,
        num_class_embeds=None if num_classes is None else num_classes + 1,
    )


def tiny_scheduler(kind: str = "ddim", num_train_timesteps: int = 50, steps: int | None = None, **kwargs):
    """A MONAI ``DDIMScheduler`` / ``DDPMScheduler`` with few training timesteps; ``steps``: ``set_timesteps``."""
    cls = {"ddim": DDIMScheduler, "ddpm": DDPMScheduler}[kind]
    sched = cls(num_train_timesteps=num_train_timesteps, **kwargs)
    if steps is not None:
        sched.set_timesteps(steps)
    return sched


class IdentityCodec(torch.nn.Module):
    """An 'autoencoder' whose latent is the image: latent guidance must reduce to
    x_0-space ILVR (pixel guidance)."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def encode(self, x):
        return x + 0 * self.anchor, torch.ones_like(x)

    def decode_stage_2_outputs(self, z):
        return z
