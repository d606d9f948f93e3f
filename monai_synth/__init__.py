"""monai_synth: diffusion-based synthesis of medical images on MONAI, for augmentation and anonymization."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
