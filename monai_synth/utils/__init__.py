"""Shared helpers: enums, atomic I/O, shared-data location."""

from __future__ import annotations

from .enums import PatchRotation, WindowPreset
from .io import atomic_path, atomic_torch_save, ensure_writable_dir, safe_torch_load
from .module import unwrap_model
from .perf import count_flops, enable_sdpa_attention, matmul_peak_gflops, optimize_for_inference, set_num_threads
from .shared_data import SHARED_ENV, shared_data_path, shared_root
