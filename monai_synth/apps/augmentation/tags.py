"""MLflow tag names shared by the study runner and the comparison (kept apart so neither imports the other)."""

from __future__ import annotations

__all__ = ["ROLE_TAG", "RUN_KEY_TAG", "STUDY_TAG", "TABLE2_ROW_TAG"]

STUDY_TAG = "monai_synth.study"  # the study (parent run name) a run belongs to
ROLE_TAG = "monai_synth.role"  # "parent" or "child"
RUN_KEY_TAG = "monai_synth.run_key"  # deterministic id of a child run (config + data fingerprints)
TABLE2_ROW_TAG = "table2_row"  # the arm's row in the Table 2 layout of the comparison
