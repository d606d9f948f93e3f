"""End-to-end tests of the guided-sampling bundles (lung_ct_ddpm, mammo_pathology_ddpm): metadata, train 1 epoch at
16 px on demo data, guided sampling, annotated outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import run

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
# bundle, extra sample overrides, expected pathology label
CASES = {
    "lung_ct_ddpm": ({"window": "lung"}, "nodule"),
    "mammo_pathology_ddpm": ({}, "mass"),
}
SCHEMA_REQUIRED = [
    "schema",
    "version",
    "monai_version",
    "pytorch_version",
    "numpy_version",
    "required_packages_version",
    "task",
    "description",
    "authors",
    "copyright",
    "network_data_format",
]
TENSOR_REQUIRED = ["type", "format", "num_channels", "spatial_shape", "dtype", "value_range"]
TINY = {
    "image_size": 16,
    "channels": [8, 8],
    "attention_levels": [False, False],
    "norm_num_groups": 8,
    "num_head_channels": 8,
    "num_train_timesteps": 50,
    "demo_n_per_class": 3,
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def check_metadata(path: Path) -> dict:
    """The required fields of MONAI's meta_schema_20240725.json (full validation when jsonschema is installed)."""
    meta = json.loads(path.read_text())
    assert [k for k in SCHEMA_REQUIRED if k not in meta] == []
    fmt = meta["network_data_format"]
    for section in ("inputs", "outputs"):
        for name, spec in fmt[section].items():
            assert [k for k in TENSOR_REQUIRED if k not in spec] == [], (section, name)
    return meta


@pytest.mark.parametrize("name", sorted(CASES))
def test_metadata_required_fields(name):
    meta = check_metadata(BUNDLES / name / "configs" / "metadata.json")
    assert meta["network_data_format"]["inputs"]["image"]["num_channels"] == 1


@pytest.mark.parametrize("name", sorted(CASES))
def test_metadata_schema(name, shared_data):
    meta = json.loads((BUNDLES / name / "configs" / "metadata.json").read_text())
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((shared_data.parent / "schemas" / "meta_schema_20240725.json").read_text())
    jsonschema.validate(meta, schema)


def _run(name: str, config: str, out: Path, **extra) -> None:
    configs = BUNDLES / name / "configs"
    run(
        run_id="run",
        meta_file=str(configs / "metadata.json"),
        config_file=[str(configs / "common.yaml"), str(configs / config)],
        bundle_root=str(BUNDLES / name),
        output_dir=str(out),
        **TINY,
        **extra,
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_train_then_sample_on_demo_data(name, tmp_path):
    sample_extra, label = CASES[name]
    _run(name, "train.yaml", tmp_path, max_epochs=1, batch_size=4)
    assert len(list((tmp_path / "checkpoints").glob("checkpoint_epoch*.pt"))) == 1
    _run(name, "sample.yaml", tmp_path, num_inference_steps=4, num_samples=3, **sample_extra)
    samples = tmp_path / "samples"
    records = [json.loads(p.read_text()) for p in sorted(samples.glob("sample_*.json"))]
    assert len(records) == 3
    for rec in records:
        assert (samples / rec["image"]).is_file() and (samples / rec["mask"]).is_file()
        box = rec["boxes"][0]
        assert box["label"] == label
        assert 0 <= box["xmin"] <= box["xmax"] < 16 and 0 <= box["ymin"] <= box["ymax"] < 16
        assert rec["pathology_reference"].endswith(".dcm") and "pathology_" in rec["pathology_reference"]
