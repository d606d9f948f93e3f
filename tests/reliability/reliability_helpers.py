"""Shared helpers for the reliability tests: copies of the real files, tiny networks, file snapshots."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

CT_DIR = "lung_ct_dicom_lungpetctdx_A0001/dicom"
CT_SLICE = f"{CT_DIR}/1-16.dcm"
CXR_J2K = "chest_xray_dicom_nema_rg1/RG1_J2KI.dcm"


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


def tiny_unet(num_classes: int | None = 2, in_channels: int = 1) -> torch.nn.Module:
    """A ~20k-parameter ``DiffusionModelUNet`` for 8x8 images."""
    from monai_synth.engines.diffusion import build_diffusion_unet

    torch.manual_seed(0)
    return build_diffusion_unet(
        num_classes=num_classes,
        in_channels=in_channels,
        channels=(8, 8),
        attention_levels=(False, False),
        num_res_blocks=1,
        num_head_channels=8,
        norm_num_groups=8,
    )
