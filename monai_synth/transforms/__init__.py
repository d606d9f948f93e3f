"""Transforms for medical image synthesis, re-exported flat like ``monai.transforms``.

``from monai_synth.transforms import HUWindowd, RandQuantileNormalizeToReference, ...``; see docs/transforms.md.
"""

from __future__ import annotations

from .intensity import *  # noqa: F401,F403
from .intensity import __all__ as _intensity_all

__all__ = list(_intensity_all)
