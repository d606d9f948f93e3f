"""Privacy checks of synthetic data sets: ``python -m monai_synth.privacy audit`` (see :mod:`.audit`).

The filter that runs inside generation is :mod:`monai_synth.engines.privacy`; the near-copy measure is
:mod:`monai_synth.metrics.copy_detection`. This package adds the audit of image folders and datalists on disk.
"""

from __future__ import annotations

from .audit import EXIT_CLEAN, EXIT_COPIES, EXIT_ERROR, audit_folders, collect_images, main

__all__ = ["EXIT_CLEAN", "EXIT_COPIES", "EXIT_ERROR", "audit_folders", "collect_images", "main"]
