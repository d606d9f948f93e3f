"""Task pipelines built on monai_synth's layers, as MONAI's ``monai/apps/<task>/``."""
