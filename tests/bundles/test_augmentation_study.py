"""The main job's bundle: metadata is valid and the whole chain runs on demo data with tiny overrides."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from monai.bundle import ConfigParser

from monai_synth.data.datalists import split_datalist
from monai_synth.metrics import accuracy_ci

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
    assert summary["privacy"]["checked"] and summary["privacy"]["n_candidates"] == 8
    report = json.loads((out / "synthetic" / "privacy_report.json").read_text())
    assert report["calibration"]["patient_disjoint"] is True and report["n_reference"] > 0
    assert sorted(r["tags"]["table2_row"] for r in summary["runs"]) == ["1", "17"]
    table = (out / "study" / "comparison" / "comparison.md").read_text()
    assert "| 1 |" in table and "| 17 |" in table
    assert (out / "study" / "mlruns.db").is_file()
    assert len(list((out / "demo_data").glob("*.dcm"))) == 16


def test_main_job_with_a_latent_generator_records_its_kind_and_first_stage(tmp_path):
    from mlflow.tracking import MlflowClient
    from monai.bundle import run

    out = tmp_path / "out"
    run(
        config_file=[str(BUNDLE / "common.yaml"), str(BUNDLE / "run.yaml")],
        output_dir=str(out), image_size=16, demo_n_per_class=8, n_synthetic_per_class=2, classifier_epochs=1,
        grid_rows=[17],
        **{"recipe#train_minutes": 0.1, "recipe#epochs": 1, "recipe#sample_steps": 2, "recipe#channels": [32, 32, 32],
           "recipe#generator_kind": "latent",
           "recipe#autoencoder": {"channels": [8, 8], "norm_num_groups": 4, "latent_channels": 2, "epochs": 1,
                                  "batch_size": 8, "adv_start_iters": 1}},
    )  # fmt: skip
    gen = json.loads((out / "summary.json").read_text())["generator"]
    assert gen["generator_kind"] == "latent"
    assert gen["autoencoder"]["scale_factor"] > 0 and set(gen["autoencoder"]["reconstruction_test"]) == {
        "psnr", "ssim", "ms_ssim"}  # fmt: skip
    client = MlflowClient(f"sqlite:///{out / 'study' / 'mlruns.db'}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    generator = [r for r in runs if r.data.tags.get("monai_synth.role") == "generator"]
    assert len(generator) == 1 and generator[0].data.tags["generator_kind"] == "latent"
    assert "autoencoder_loss" in generator[0].data.metrics and "train_loss" in generator[0].data.metrics


def test_main_job_defaults_give_a_test_split_that_separates_the_arms():
    """The demo's test split has >= 200 images per class (issue 16: enough to tell the arms apart, CIs printed)."""
    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "common.yaml"), str(BUNDLE / "run.yaml")])
    n, ratios = parser["demo_n_per_class"], parser["demo_split"]
    items = [{"id": str(i), "label": i % 2} for i in range(2 * n)]
    test = Counter(it["label"] for it in split_datalist(items, ratios=ratios, seed=parser["seed"])["test"])
    assert min(test.values()) >= 200, test
    # an exact 95 % interval at accuracy 0.9 on that split is narrower than +-0.04
    lo, hi = accuracy_ci(int(0.9 * sum(test.values())), sum(test.values()))
    assert hi - lo < 0.08
