"""String option sets (``StrEnum``) shared across ``monai_synth``."""

from __future__ import annotations

from monai.utils import StrEnum

__all__ = ["DataSource", "PatchRotation", "WindowPreset"]


class WindowPreset(StrEnum):
    """Named CT display windows (level/width in HU); values in ``monai_synth.transforms.WINDOW_PRESETS``.

    Source: Radiopaedia, "Windowing (CT)", https://radiopaedia.org/articles/windowing-ct (typical
    window width/level values). ``"soft tissue"`` (with a space) is accepted as an alias of ``SOFT_TISSUE``
    by the transforms.
    """

    LUNG = "lung"
    BONE = "bone"
    SOFT_TISSUE = "soft_tissue"
    MEDIASTINUM = "mediastinum"
    BRAIN = "brain"


class PatchRotation(StrEnum):
    """Rotation modes of ``RandPatchAugment``: any angle, or multiples of 90 degrees only."""

    ANY = "any"
    RIGHT_ANGLE = "right_angle"


class DataSource(StrEnum):
    """Labelled data sources of :func:`monai_synth.data.load_labelled_splits` (docs/data.md)."""

    DEMO = "demo"
    MEDMNIST = "medmnist"
    FOLDER = "folder"
    DATALIST = "datalist"
    DICOM = "dicom"
