"""``python -m monai_synth.vtt serve|report ...`` (see :mod:`monai_synth.apps.vtt.cli`)."""

from __future__ import annotations

import logging
import sys

from monai_synth.apps.vtt.cli import main

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(main())
