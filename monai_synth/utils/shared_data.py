"""Locate the optional shared real-data folder (``$MONAI_SYNTH_SHARED/data``) used by tests, benchmarks and studies."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["SHARED_ENV", "shared_root", "shared_data_path"]

SHARED_ENV = "MONAI_SYNTH_SHARED"


def shared_root() -> Path | None:
    """Return the shared folder from ``$MONAI_SYNTH_SHARED``, else ``../shared`` beside the repository, else None."""
    env = os.environ.get(SHARED_ENV)
    if env:
        return Path(env).expanduser().resolve()
    candidate = Path(__file__).resolve().parents[2].parent / "shared"
    return candidate if (candidate / "data").is_dir() else None


def shared_data_path(*parts: str) -> Path | None:
    """Path inside ``<shared>/data``, or None when the shared folder is not available."""
    root = shared_root()
    if root is None:
        return None
    return root.joinpath("data", *parts)
