"""Intensity transforms: HU conversion, CT windows, mammogram pathology patch preparation (seed 001).

The names are re-exported by :mod:`monai_synth.transforms`, as MONAI does for ``monai.transforms.intensity``.
"""
