"""The latent-diffusion benchmark scripts run end to end on a tiny JPEG folder (CPU, seconds): gpu_check.py (the GPU
check's code path, on the CPU) and latent_ilvr.py. Their figures come from real runs documented in docs/latent.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "generator_kind='latent'", "channels=(8,8)", "attention_levels=(False,False)", "norm_num_groups=8",
    "num_head_channels=8", "batch_size=4", "sample_steps=2", "warmup_iters=1",
    "autoencoder={'channels':(8,8),'norm_num_groups':4,'latent_channels':2,'epochs':1,'batch_size':4}",
]  # fmt: skip


@pytest.fixture
def jpeg_folder(tmp_path: Path) -> Path:
    """train/ and test/ with NORMAL and PNEUMONIA JPEGs (RGB with R = G = B, as kermany_cxr224), no valid/."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 3)):
        for c, name in enumerate(("NORMAL", "PNEUMONIA")):
            d = tmp_path / "data" / split / name
            d.mkdir(parents=True)
            for i in range(n):
                gray = (rng.random((40, 40)) * 100 + 100 * c).astype(np.uint8)
                Image.fromarray(np.stack([gray] * 3, -1)).save(d / f"person{i}_{c}.jpeg")
    return tmp_path / "data"


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)  # fmt: skip


def test_gpu_check_runs_on_the_cpu(jpeg_folder, tmp_path):
    out = tmp_path / "gpu.json"
    proc = _run("gpu_check.py", "--data", str(jpeg_folder), "--image-size", "16", "--minutes", "0.02", "--n", "4",
                "--batch-size", "2", "--device", "cpu", "--no-fid", "--work-dir", str(tmp_path / "w"),
                "--out", str(out), "--recipe", *TINY)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["generator_kind"] == "latent" and res["n_sampled"] == 4 and res["peak_memory_gib"] is None
    assert res["sampling_s"] > 0 and res["unet_img_per_s"] > 0


def test_gpu_check_sh_refuses_without_cuda():
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "/nonexistent"], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode != 0 and "no CUDA device" in proc.stderr


def test_latent_ilvr_runs(jpeg_folder, tmp_path):
    out = tmp_path / "ilvr.json"
    proc = _run("latent_ilvr.py", "--data", str(jpeg_folder), "--image-size", "16", "--train-minutes", "0.02",
                "--references", "3", "--factor", "4", "--steps", "2", "--work-dir", str(tmp_path / "w"),
                "--out", str(out), "--recipe", *TINY)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["n_references"] == 3 and set(res["guided"]) >= {"corr_own_mean", "corr_other_mean"}


def test_loss_fid_runs_and_reports_every_loss_and_dimension(tmp_path):
    """benchmarks/loss_fid.py (seed 002's loss x FID-dimension study) on a tiny MedMNIST-layout file."""
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import write_medmnist_npz

    npz = tmp_path / "tiny.npz"
    write_medmnist_npz(npz, n=8, shape=(8, 8))
    out = tmp_path / "loss_fid.json"
    proc = _run(
        "loss_fid.py", "--data", str(npz), "--image-size", "8", "--train-minutes", "0.02", "--losses", "l1", "huber",
        "--fid-dims", "64", "--n-per-class", "2", "--fid-images", "4", "--work-dir", str(tmp_path / "work"),
        "--out", str(out), "--recipe", "channels=(8,8)", "attention_levels=(False,False)", "norm_num_groups=8",
        "num_head_channels=8", "batch_size=4", "sample_steps=2", "epochs=1",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert sorted(doc["losses"]) == ["huber", "l1"] and doc["real_train_vs_test"]["64"] >= 0
    for arm in doc["losses"].values():
        assert arm["64"]["fid_synth_test"] >= 0 and "kid_mean" in arm["64"] and arm["epochs"] == 1
    assert doc["paper"]["l2_fid64"] == 0.85


def test_utility_curve_trains_with_minute_snapshots_and_scores_each(tmp_path):
    """benchmarks/utility_curve.py --train-minutes (issue 16 item 5) with the rectified-flow objective: one snapshot
    after the first epoch and the final checkpoint, each sampled with the recipe's sampler and scored."""
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import write_medmnist_npz

    npz = tmp_path / "tiny.npz"
    write_medmnist_npz(npz, n=8, shape=(8, 8))
    out = tmp_path / "curve.json"
    args = ["--data", str(npz), "--train-minutes", "0.5", "--marks", "0.0001", "--max-epochs", "2", "--n", "4",
            "--fid-n", "4", "--fid-dims", "64", "--classifier-epochs", "1", "--work-dir", str(tmp_path / "work"),
            "--out", str(out), "--recipe", "image_size=8", "channels=(8,8)", "attention_levels=(False,False)",
            "norm_num_groups=8", "num_head_channels=8", "batch_size=4", "sample_steps=2", "prediction_type='flow'",
            "sampler='rflow'"]  # fmt: skip
    proc = _run("utility_curve.py", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["objective"] == "flow" and doc["sampling"]["sampler"] == "rflow"
    first, last = doc["points"]
    assert first["checkpoint"].startswith("snapshot_") and first["epoch"] == 1 and last["epoch"] == 2
    assert 0 < first["train_minutes"] <= last["train_minutes"] < 0.5 and first["nfe"] == 2
    assert all(p["fid_synth_test"] >= 0 and 0 <= p["synthetic_only_acc"] <= 1 for p in doc["points"])
    again = _run("utility_curve.py", *args)  # a second call reuses the finished generator and its snapshot
    assert again.returncode == 0, again.stderr[-3000:]
    assert [p["checkpoint"] for p in json.loads(out.read_text())["points"]] == [first["checkpoint"], last["checkpoint"]]


def test_utility_curve_needs_one_source_of_checkpoints(tmp_path):
    proc = _run("utility_curve.py", "--data", str(tmp_path / "x.npz"), "--out", str(tmp_path / "c.json"))
    assert proc.returncode == 2 and "--train-minutes" in proc.stderr
    proc = _run("utility_curve.py", "--data", "x.npz", "--train-minutes", "1", "--recipe-from", "s.json")
    assert proc.returncode == 2 and "either" in proc.stderr


def _benchmark(name: str):
    """The module of ``benchmarks/<name>.py`` (the scripts are not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_sampler_quality_keeps_the_deterministic_ddim_apart_and_judges_targets():
    from monai_synth.engines import DiffusionRecipe

    sq = _benchmark("sampler_quality")
    recipe = DiffusionRecipe(prediction_type="epsilon")  # DDIM 50 at eta 1
    s = sq.settings(recipe, 2.0)
    etas = {k: sq.setting_eta(s[k], recipe) for k in ("ddim50", "ddim50_eta0", "dpmpp_2m_15", "default")}
    assert etas == {"ddim50": 1.0, "ddim50_eta0": 0.0, "dpmpp_2m_15": 0.0, "default": 1.0}
    row = {"fid": 40.0, "seconds_per_1000": 100.0}
    samplers = {"ddim50": row, "cfg_ddim50": {"fid": 50.0, "seconds_per_1000": 200.0},
                "default": {"fid": 41.0, "seconds_per_1000": 30.0},  # 1.025x the FID in 0.3x the time, 30 s
                "cfg_a": {"fid": 52.0, "seconds_per_1000": 70.0},  # 1.04x, 0.35x: met
                "cfg_b": {"fid": 53.0, "seconds_per_1000": 60.0}}  # 1.06x: not met  # fmt: skip
    t = sq.targets(samplers)
    assert t["default_met"] and t["cfg_fast_met"] == {"cfg_a": True, "cfg_b": False}
    assert t["default_fid_ratio_to_ddim50"] == pytest.approx(41 / 40)
    samplers["ddim50"] = {"fid": 40.0, "seconds_per_1000": 200.0}
    samplers["default"] = {"fid": 41.0, "seconds_per_1000": 61.0}  # 0.305x the time, but over 60 s per 1000
    assert not sq.targets(samplers)["default_met"]


def test_sampler_quality_flow_generator_gets_flow_samplers():
    """A rectified-flow generator: the 50-step references are MONAI's Euler sampler, every setting is one the flow
    scheduler accepts (no DDIM), and the Euler and multistep settings sample images in [0, 1] at their NFE."""
    from types import SimpleNamespace

    import torch

    from monai_synth.engines import DiffusionRecipe
    from monai_synth.networks.schedulers import build_scheduler, sampler_from

    sq = _benchmark("sampler_quality")
    recipe = DiffusionRecipe(prediction_type="flow", sampler="rflow", image_size=8)
    s = sq.settings(recipe, 2.0)
    assert s["ddim50"]["sampler"] == s["cfg_ddim50"]["sampler"] == s["default"]["sampler"] == "rflow"
    assert "ddim50_eta0" not in s and not any(v["sampler"] in ("ddim", "ddpm") for v in s.values())
    assert {"rflow_15", "dpmpp_2m_15", "cfg_dpmpp_2m_15", "cfg_interval_dpmpp_2m_15"} <= set(s)
    flow = build_scheduler("rflow", num_train_timesteps=100)
    for setting in s.values():
        sampler_from(flow, setting["sampler"])  # raises for a sampler the flow model cannot use

    class Shrink(torch.nn.Module):
        num_class_embeds = 3  # two classes and the null class of CFG

        def forward(self, x, timesteps=None, class_labels=None):
            return -0.5 * x  # a velocity towards x_0 = x / 2

    gen = SimpleNamespace(model=Shrink(), scheduler=flow)
    for name, nfe in (("rflow_10", 10), ("dpmpp_2m_15", 15), ("cfg_sde_dpmpp_2m_15", 30)):
        images, got = sq.sample_images(gen, recipe, s[name], [2, 2], 0, 4)
        assert got == nfe and images.shape == (4, 1, 8, 8) and 0 <= float(images.min()) <= float(images.max()) <= 1


def test_sampler_quality_clip_flag_reaches_the_scheduler():
    """``clip: False`` samples without clipping the predicted x_0 (the default clips, as the recipe samples): with a
    denoiser whose x_0 estimate leaves [-1, 1], the two trajectories must differ, and the default must equal clip."""
    from types import SimpleNamespace

    import torch
    from monai.networks.schedulers import DDPMScheduler

    from monai_synth.engines import DiffusionRecipe

    class Overshoot(torch.nn.Module):
        def forward(self, x, timesteps=None, class_labels=None):
            return -0.5 * x  # x_0 = (x - sqrt(1 - a) eps) / sqrt(a) grows past the data range

    sq = _benchmark("sampler_quality")
    gen = SimpleNamespace(model=Overshoot(), scheduler=DDPMScheduler(num_train_timesteps=100))
    recipe = DiffusionRecipe(image_size=8)
    base = {"sampler": "ddim", "steps": 5, "w": 1.0, "interval": None, "eta": 0.0}
    out = {k: sq.sample_images(gen, recipe, {**base, **extra}, [2, 2], 0, 4)[0]
           for k, extra in (("default", {}), ("clip", {"clip": True}), ("noclip", {"clip": False}))}  # fmt: skip
    assert torch.equal(out["default"], out["clip"])
    assert not torch.allclose(out["clip"], out["noclip"])
    assert all(0.0 <= float(v.min()) and float(v.max()) <= 1.0 for v in out.values())


def test_ode_diagnostic_x0_profile_is_zero_for_an_oracle_and_counts_overshoot():
    """An oracle denoiser (the true noise, from x_t and the known x_0) has zero x_0 error at every timestep; one that
    predicts zero noise has x_0 estimate x_t / sqrt(abar), which leaves [-1, 1] at high noise."""
    from types import SimpleNamespace

    import torch
    from monai.networks.schedulers import DDPMScheduler

    od = _benchmark("ode_diagnostic")
    sched = DDPMScheduler(num_train_timesteps=100, schedule="cosine")
    x0 = torch.rand(4, 1, 8, 8) * 2 - 1
    mean = x0.mean(0, keepdim=True)

    class Oracle(torch.nn.Module):
        def forward(self, xt, timesteps=None, class_labels=None):
            a = sched.alphas_cumprod[int(timesteps[0])]
            return (xt - a.sqrt() * x0) / (1 - a).sqrt()

    rows = od.x0_error_profile(SimpleNamespace(model=Oracle(), scheduler=sched), x0, None, mean, (90, 50, 5))
    assert [r["t"] for r in rows] == [90, 50, 5]
    assert max(r["rmse_x0_network"] for r in rows) < 1e-4
    ref = float(((mean - x0) ** 2).mean().sqrt())
    assert all(abs(r["rmse_x0_train_mean"] - ref) < 1e-6 for r in rows)

    class Zero(torch.nn.Module):
        def forward(self, xt, timesteps=None, class_labels=None):
            return torch.zeros_like(xt)

    rows = od.x0_error_profile(SimpleNamespace(model=Zero(), scheduler=sched), x0, None, mean, (95, 5))
    assert rows[0]["fraction_outside"] > 0.5 and rows[0]["rmse_x0_network"] > rows[1]["rmse_x0_network"]


def test_sampler_quality_samples_the_recipes_shifted_grid():
    """A recipe with ``timestep_shift`` samples its ``default`` (and the added CFG twin) on the shifted grid: same
    seed, same NFE, other images than the uniform grid; the dedup key keeps the two apart."""
    from types import SimpleNamespace

    import torch

    from monai_synth.engines import DiffusionRecipe
    from monai_synth.networks.schedulers import build_scheduler

    sq = _benchmark("sampler_quality")
    recipe = DiffusionRecipe(prediction_type="flow", sampler="sde_dpmpp_2m", sample_steps=15, timestep_shift=0.5,
                             image_size=8)  # fmt: skip
    s = sq.settings(recipe, 2.0)
    assert s["default"]["shift"] == 0.5 and "shift" not in s["sde_dpmpp_2m_15"]
    assert s["cfg_sde_dpmpp_2m_15_shift"] == {**s["cfg_sde_dpmpp_2m_15"], "shift": 0.5}

    class Shrink(torch.nn.Module):
        num_class_embeds = 3

        def forward(self, x, timesteps=None, class_labels=None):
            return -0.5 * x

    gen = SimpleNamespace(model=Shrink(), scheduler=build_scheduler("rflow", num_train_timesteps=1000))
    shifted, nfe = sq.sample_images(gen, recipe, s["default"], [2, 2], 0, 4)
    uniform, nfe_u = sq.sample_images(gen, recipe, s["sde_dpmpp_2m_15"], [2, 2], 0, 4)
    assert nfe == nfe_u == 15 and not torch.allclose(shifted, uniform)


def test_recipe_probe_settings_and_extra_averages():
    """``--settings`` entries parse to sampler settings (bad ones are refused by name); the extra averages follow
    the EMA formula with warm-up against a hand computation and keep the raw network."""
    from types import SimpleNamespace

    import torch

    rp = _benchmark("recipe_probe")
    assert rp.parse_setting("sde_dpmpp_2m:15:shift=0.5:w=1.5") == {
        "sampler": "sde_dpmpp_2m", "steps": 15, "w": 1.5, "interval": None, "shift": 0.5}  # fmt: skip
    for bad in ("sde_dpmpp_2m", "ddim:x", "ddim:15:eta=1", "ddim:15:w=high"):
        with pytest.raises(SystemExit, match="settings"):
            rp.parse_setting(bad)
    net = torch.nn.Linear(1, 1, bias=False)
    extra = rp.ExtraAverages([0.5])
    engine = SimpleNamespace(network=net)
    values = [1.0, 3.0, 5.0]
    for v in values:
        net.weight.data.fill_(v)
        extra(engine)
    # AveragedModel copies at the first update; then decay min(0.5, (1 + n) / (10 + n)) with n = 0, 1
    ema = 1.0
    for n, v in enumerate(values[1:]):
        d = min(0.5, (1 + n) / (10 + n))
        ema = d * ema + (1 - d) * v
    assert float(extra.emas[0.5].module.weight) == pytest.approx(ema) and extra.network is net
