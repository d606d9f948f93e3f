"""Shared helpers: enums, atomic I/O, shared-data location."""

from __future__ import annotations

from .enums import PatchRotation, WindowPreset
from .io import atomic_path, atomic_torch_save, ensure_writable_dir, safe_torch_load
from .shared_data import SHARED_ENV, shared_data_path, shared_root

__all__ = [
    "PatchRotation",
    "WindowPreset",
    "atomic_path",
    "atomic_torch_save",
    "ensure_writable_dir",
    "safe_torch_load",
    "SHARED_ENV",
    "shared_data_path",
    "shared_root",
]
