"""The main job's bundle: metadata is valid and the whole chain runs on demo data with tiny overrides."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "bundles" / "augmentation_study" / "configs"


def test_metadata_verifies_offline(tmp_path, shared_data):
    schema = tmp_path / "schema.json"
    shutil.copy(shared_data.parent / "schemas" / "meta_schema_20240725.json", schema)
    out = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "verify_metadata", "--meta_file", str(BUNDLE / "metadata.json"),
         "--filepath", str(schema)],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "metadata is verified with no error" in (out.stdout + out.stderr)


@pytest.mark.slow
def test_main_job_runs_end_to_end(tmp_path):
    from monai.bundle import run

    out = tmp_path / "out"
    run(
        config_file=[str(BUNDLE / "common.yaml"), str(BUNDLE / "run.yaml")],
        output_dir=str(out),
        image_size=8,
        demo_n_per_class=8,
        n_synthetic_per_class=4,
        classifier_epochs=1,
        grid_rows=[1, 17],
        **{"recipe#train_minutes": 0.05, "recipe#epochs": 1, "recipe#sample_steps": 2, "recipe#channels": [32, 32, 32]},
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["generator"]["epochs"] == 1
    assert summary["synthetic"]["n"] == 8
    assert sorted(r["tags"]["table2_row"] for r in summary["runs"]) == ["1", "17"]
    table = (out / "study" / "comparison" / "comparison.md").read_text()
    assert "| 1 |" in table and "| 17 |" in table
    assert (out / "study" / "mlruns.db").is_file()
    assert len(list((out / "demo_data").glob("*.dcm"))) == 16
