"""``python -m monai_synth.privacy audit ...``: see :mod:`monai_synth.privacy.audit`."""

import sys

from monai_synth.privacy.audit import main

if __name__ == "__main__":
    sys.exit(main())
