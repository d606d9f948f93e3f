"""End-to-end tests of the guided-sampling bundles (lung_ct_ddpm, mammo_pathology_ddpm): metadata, train 1 epoch at
16 px on demo data, guided sampling, annotated outputs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from monai.bundle import ConfigParser, run

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
    "recipe#channels": [8, 8],
    "recipe#attention_levels": [False, False],
    "recipe#norm_num_groups": 8,
    "recipe#num_head_channels": 8,
    "recipe#num_train_timesteps": 50,
    "recipe#sample_steps": 4,  # DDIM steps of sampling (num_inference_steps)
    "demo_n_per_class": 3,
}


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


@pytest.mark.parametrize("name", sorted(CASES))
def test_verify_metadata_with_monai(name, tmp_path, shared_data):
    schema = shutil.copy(shared_data.parent / "schemas" / "meta_schema_20240725.json", tmp_path / "schema.json")
    meta = BUNDLES / name / "configs" / "metadata.json"
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "verify_metadata", "--meta_file", str(meta), "--filepath", str(schema)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "metadata is verified with no error" in proc.stdout + proc.stderr


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
    _run(name, "train.yaml", tmp_path, **{"recipe#epochs": 1, "recipe#batch_size": 4})
    assert len(list((tmp_path / "checkpoints").glob("checkpoint_epoch*.pt"))) == 1
    _run(name, "sample.yaml", tmp_path, num_samples=3, positive_fraction=1.0, **sample_extra)
    samples = tmp_path / "samples"
    records = [json.loads(p.read_text()) for p in sorted(samples.glob("sample_*.json"))]
    assert len(records) == 3
    for rec in records:
        assert (samples / rec["image"]).is_file() and (samples / rec["mask"]).is_file()
        box = rec["boxes"][0]
        assert box["label"] == label
        assert 0 <= box["xmin"] <= box["xmax"] < 16 and 0 <= box["ymin"] <= box["ymax"] < 16
        assert rec["pathology_reference"].startswith("ref-")  # opaque ids only: no source file name
        assert ".dcm" not in json.dumps({k: v for k, v in rec.items() if k != "dicom"})
        assert rec.get("dicom", "sample_.dcm").startswith("sample_")  # lung CT: its own 16-bit HU DICOM
    assert not list(samples.glob("anatomy_*")) and not list(samples.glob("pathology_*"))  # no real pixels
    assert not (tmp_path / "samples_REAL_references").exists()


@pytest.mark.parametrize("name", sorted(CASES))
def test_paper_literal_sampling_then_evaluate(name, tmp_path):
    """sample.yaml with --guidance_mode paper_literal, then evaluate.yaml: FID/KID rows against the real halves and
    the lesion check of the samples."""
    _run(name, "train.yaml", tmp_path, **{"recipe#epochs": 1, "recipe#batch_size": 4})
    _run(name, "sample.yaml", tmp_path, num_samples=6, positive_fraction=0.5, guidance_mode="paper_literal")
    listing = json.loads((tmp_path / "samples" / "datalist.json").read_text())
    assert [it["label"] for it in listing["training"]] == [1, 1, 1, 0, 0, 0]
    sidecar = json.loads((tmp_path / "samples" / "sample_0000.json").read_text())
    assert sidecar["guidance_mode"] == "paper_literal" and set(sidecar["lesion_in_box"]) >= {"correlation", "inside"}
    configs = BUNDLES / name / "configs"
    run(run_id="run", meta_file=str(configs / "metadata.json"), bundle_root=str(BUNDLES / name),
        config_file=[str(configs / c) for c in ("common.yaml", "sample.yaml", "evaluate.yaml")],
        output_dir=str(tmp_path), fid_dims=64, **TINY)  # fmt: skip
    report = json.loads((tmp_path / "evaluation" / "guided_evaluation.json").read_text())
    pairs = {(r["Dataset A"], r["Dataset B"]) for r in report["rows"]}
    assert ("synthetic", "real train") in pairs and ("real train", "real test") in pairs
    assert report["fid_dims"] == 64 and report["lesion_in_box"]["n"] == 3
    assert (tmp_path / "evaluation" / "evaluation.md").is_file()


def test_mammo_increments_from_the_bundle_defaults(tmp_path):
    """train -> sample (defaults: 40 samples, 10 % with a mass) -> increments.yaml: the seed 001 table."""
    name = "mammo_pathology_ddpm"
    _run(name, "train.yaml", tmp_path, **{"recipe#epochs": 1, "recipe#batch_size": 4})
    _run(name, "sample.yaml", tmp_path)
    configs = BUNDLES / name / "configs"
    run(run_id="run", meta_file=str(configs / "metadata.json"), bundle_root=str(BUNDLES / name),
        config_file=[str(configs / c) for c in ("common.yaml", "sample.yaml", "increments.yaml")],
        output_dir=str(tmp_path), **{**TINY, "demo_n_per_class": 16},
        **{"classifier#network": "resnet10", "classifier#epochs": 1, "classifier#batch_size": 8})  # fmt: skip
    report = json.loads((tmp_path / "increments" / "increments.json").read_text())
    assert len(report["rows"]) == 5 and report["rows"][0]["synthetic_added"] == 0
    assert report["increments"] == [r["synthetic_added"] for r in report["rows"]]
    assert report["positive_fraction"] == 0.1 and (tmp_path / "increments" / "increments.md").is_file()


def _parser(name: str, config: str, out: Path, **extra) -> ConfigParser:
    configs = BUNDLES / name / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / "common.yaml"), str(configs / config)])
    parser.update({"bundle_root": str(BUNDLES / name), "output_dir": str(out), **extra})
    return parser


@pytest.mark.parametrize("name", sorted(CASES))
def test_sampling_is_one_component(name, tmp_path):
    """sample.yaml runs a GuidedSampler component with DDIM from ddim_from(@scheduler) and the recipe's values."""
    from monai.networks.schedulers import DDIMScheduler

    from monai_synth.apps.guided import GuidedSampler
    from monai_synth.engines import DiffusionRecipe

    parser = _parser(name, "sample.yaml", tmp_path)
    assert parser["run"] == ["$@sampler()"]
    assert parser["sampler"]["_target_"] == "monai_synth.apps.guided.GuidedSampler"
    assert parser.get("sample_scheduler") == "$monai_synth.engines.ddim_from(@scheduler)"
    recipe = parser.get_parsed_content("recipe")
    assert isinstance(recipe, DiffusionRecipe) and (recipe.lr, recipe.loss, recipe.batch_size) == (1e-4, "l2", 16)
    assert parser.get_parsed_content("num_inference_steps") == recipe.sample_steps
    assert isinstance(parser.get_parsed_content("sample_scheduler"), DDIMScheduler)
    parser.update({"trained_network": "@network"})  # no checkpoint needed to build the component
    parser.update({k: v for k, v in TINY.items()})
    assert isinstance(parser.get_parsed_content("sampler"), GuidedSampler)


@pytest.mark.parametrize("name", sorted(CASES))
def test_data_source_is_demo_or_dicom(name, tmp_path):
    parser = _parser(name, "train.yaml", tmp_path, data_source="folder")
    with pytest.raises(Exception) as info:
        parser.get_parsed_content("data")
    assert "folder" in repr(info.value) + repr(info.value.__cause__)
    parser = _parser(name, "train.yaml", tmp_path, data_source="dicom")  # dicom without data_path
    with pytest.raises(Exception) as info:
        parser.get_parsed_content("data")
    assert "does not exist" in repr(info.value) + repr(info.value.__cause__)


def test_lung_ct_latent_configuration_trains_and_samples_with_tumour_guidance(tmp_path):
    """train_latent.yaml + sample_latent.yaml (512 px by default) at 32 px with a tiny first stage: the generator is
    latent and class-conditional, the guided samples are decoded at image size with their boxes and lesion check."""
    configs = BUNDLES / "lung_ct_ddpm" / "configs"
    tiny = {**TINY, "image_size": 32, "recipe#epochs": 1, "recipe#batch_size": 4, "recipe#train_minutes": None,
            "recipe#autoencoder": {"channels": [8, 8], "norm_num_groups": 4, "latent_channels": 2, "epochs": 1,
                                   "batch_size": 4, "adv_start_iters": 1}}  # fmt: skip
    common = dict(run_id="run", meta_file=str(configs / "metadata.json"), bundle_root=str(BUNDLES / "lung_ct_ddpm"),
                  output_dir=str(tmp_path), **tiny)  # fmt: skip
    run(config_file=[str(configs / c) for c in ("common.yaml", "train_latent.yaml")], **common)
    done = json.loads((tmp_path / "generator" / "generator_done.json").read_text())
    assert done["generator_kind"] == "latent" and done["in_channels"] == 2
    files = ("common.yaml", "train_latent.yaml", "sample.yaml", "sample_latent.yaml")
    run(config_file=[str(configs / c) for c in files], num_samples=4, positive_fraction=0.5, **common)
    samples = tmp_path / "samples_latent"
    records = [json.loads(p.read_text()) for p in sorted(samples.glob("sample_*.json"))]
    assert [r["label"] for r in records] == [1, 1, 0, 0]
    assert records[0]["boxes"][0]["label"] == "nodule" and records[2]["boxes"] == []
    from PIL import Image

    assert Image.open(samples / records[0]["image"]).size == (32, 32)
    assert json.loads((samples / "lesion_in_box.json").read_text())["n"] == 2
