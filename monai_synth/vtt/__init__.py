"""``python -m monai_synth.vtt``: the command line of the reader study (:mod:`monai_synth.apps.vtt`)."""
