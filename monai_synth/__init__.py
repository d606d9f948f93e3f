"""monai_synth: diffusion-based synthesis of medical images on MONAI, for augmentation and anonymization.

``import monai_synth`` is enough, as ``import monai`` is: it registers the project's readers with ``LoadImage`` and
makes the data, transforms, networks, inferers, engines, handlers, metrics and apps reachable as attributes.
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import data, transforms, utils  # isort: skip (data registers the readers first)
from . import apps, engines, handlers, inferers, metrics, networks
from .apps import augmentation, guided
