"""Benchmark harness: monai_synth against its peers, side by side in one process.

Usage::

    python benchmarks/run.py --quick --threads 2 --out results.json      # smoke test (seconds to a minute)
    python benchmarks/run.py --threads 16 --out results.json              # full run (quiet machine!)
    python benchmarks/run.py --device cuda --amp --out results_gpu.json   # GPU path (bf16 autocast)

What is measured (see benchmarks/README.md and docs/performance.md):

- training throughput (images/s) of the default conditional model at 28 and 64 px vs lucidrains'
  ``denoising-diffusion-pytorch`` (seed 000's tool) and diffusers ``UNet2DModel`` (equal parameters);
- CFG sampling throughput (DDIM, guidance on) vs the same peers; time for 1000 CFG images;
- multi-condition (ILVR) guided sampling overhead vs unguided sampling;
- DICOM series -> HU-windowed tensor throughput (slices/s), cold and cached, vs plain MONAI;
- peak memory per case (fresh subprocess, RSS high-water mark ``VmHWM`` reset after setup;
  ``torch.cuda.max_memory_allocated`` on GPU);
- the measured float32 matmul peak and the UNet forward's fraction of it;
- speed levers (inference_mode, batched CFG, SDPA, channels_last, torch.compile, fewer steps, threads).

Every timing is the median of ``--repeats`` calls after ``--warmup`` untimed calls.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402
from peers import PeerUnavailable, Workload, num_params  # noqa: E402

from monai_synth.utils.perf import (  # noqa: E402
    count_flops,
    enable_compile_cache,
    enable_sdpa_attention,
    machine_info,
    matmul_peak_gflops,
    optimize_for_inference,
    set_num_threads,
    time_call,
)

logger = logging.getLogger("benchmarks")

NUM_CLASSES = 2  # seed 000: normal / pneumonia
NUM_TRAIN_TIMESTEPS = 1000
PEER_PACKAGES = ("torch", "monai", "monai_synth", "diffusers", "denoising-diffusion-pytorch", "pydicom", "numpy")

# Fallback for the default 28x28 conditional network when monai_synth.engines.build_diffusion_unet is missing.
OURS_NETWORK: dict[str, Any] = {
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": 1,
    "channels": (32, 64, 64),
    "attention_levels": (False, False, True),
    "num_res_blocks": 1,
    "num_head_channels": 32,
    "norm_num_groups": 32,
    "num_class_embeds": NUM_CLASSES + 1,
}

TARGETS = [
    # (name, metric, op, threshold)
    ("training >= 2x lucidrains", "train_ratio_vs_lucidrains", ">=", 2.0),
    ("training >= 1.5x diffusers (equal params)", "train_ratio_vs_diffusers", ">=", 1.5),
    ("CFG sampling >= 3x lucidrains", "sample_ratio_vs_lucidrains", ">=", 3.0),
    ("CFG sampling >= 2x diffusers", "sample_ratio_vs_diffusers", ">=", 2.0),
    ("1000 CFG 28x28 images < 120 s", "time_1000_cfg_images_s", "<", 120.0),
    ("guided sampling overhead < 10%", "guided_overhead", "<", 0.10),
    ("UNet forward >= 40% of matmul peak", "unet_fraction_of_peak", ">=", 0.40),
]


class SkipCase(RuntimeError):
    """A case cannot run here (missing data or dependency); the message is recorded as the reason."""


# ---------------------------------------------------------------------------------------------- arguments
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmark_results.json", help="JSON file to write.")
    p.add_argument("--quick", action="store_true", help="tiny sizes and repeats: checks the harness, not speed.")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice).")
    p.add_argument("--interop-threads", type=int, default=None, help="torch inter-op threads.")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i].")
    p.add_argument("--amp", action="store_true", help="bf16 autocast for every library (GPU path).")
    p.add_argument("--batch", type=int, default=None, help="training batch (default 64; quick 4).")
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="training image sizes (default 28 64).")
    p.add_argument("--sample-batch", type=int, default=None, help="sampling batch (default 100; quick 4).")
    p.add_argument("--steps", type=int, default=None, help="DDIM steps (default 50; quick 4).")
    p.add_argument("--guidance-scale", type=float, default=3.0, help="CFG weight w (out = u + w (c - u)).")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per case (default 5; quick 2).")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls per case (default 2; quick 1).")
    p.add_argument("--channels-last", action="store_true", help="fast path: channels_last memory format.")
    p.add_argument("--no-sdpa", action="store_true", help="fast path: keep MONAI's explicit attention.")
    p.add_argument("--compile", action="store_true", help="also time torch.compile (1-2 min compile on CPU).")
    p.add_argument("--compile-cache", default=None, help="persistent Inductor cache dir for --compile.")
    p.add_argument("--lucidrains-dim", type=int, default=32, help="lucidrains Unet dim (seed 000: 32).")
    p.add_argument("--dicom-dir", default=None, help="DICOM series folder (default: shared lung CT A0001).")
    p.add_argument("--dicom-copies", type=int, default=None, help="dataset items per epoch (default 8; quick 2).")
    p.add_argument("--skip", nargs="*", default=[], help="case-name prefixes to skip, e.g. train/lucidrains dicom.")
    p.add_argument("--no-memory", action="store_true", help="skip the per-case memory subprocesses.")
    p.add_argument("--no-1000", action="store_true", help="extrapolate the 1000-image time instead of timing it.")
    p.add_argument("--memory-case", default=None, help=argparse.SUPPRESS)  # internal: child process mode
    args = p.parse_args(argv)
    quick = args.quick
    defaults = {
        "batch": 4 if quick else 64,
        "sizes": [28, 32] if quick else [28, 64],
        "sample_batch": 4 if quick else 100,
        "steps": 4 if quick else 50,
        "repeats": 2 if quick else 5,
        "warmup": 1 if quick else 2,
        "dicom_copies": 2 if quick else 8,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.quick:
        args.no_1000 = True
    return args


# ---------------------------------------------------------------------------------------------- our cases
def ours_network(sdpa: bool = False) -> torch.nn.Module:
    """The default conditional ``DiffusionModelUNet`` of monai_synth (``build_diffusion_unet``), SDPA optional."""
    try:
        from monai_synth.engines.diffusion import build_diffusion_unet
    except ImportError:
        from monai.networks.nets import DiffusionModelUNet

        logger.warning("monai_synth.engines.diffusion.build_diffusion_unet missing: using OURS_NETWORK.")
        model = DiffusionModelUNet(**OURS_NETWORK)
    else:
        model = build_diffusion_unet(num_classes=NUM_CLASSES)
    if sdpa:
        enable_sdpa_attention(model)
    return model


def ours_network_config() -> dict[str, Any]:
    """The block layout of :func:`ours_network` (for the JSON and for building the equal-parameter peer)."""
    model = ours_network()
    block = model.down_blocks[-1]
    heads = [m for m in model.modules() if hasattr(m, "num_heads") and hasattr(m, "use_flash_attention")]
    return {
        "channels": list(model.block_out_channels),
        "attention_levels": list(model.attention_levels),
        "num_res_blocks": list(model.num_res_blocks),
        "head_channels": int(model.block_out_channels[-1] // heads[0].num_heads) if heads else None,
        "norm_num_groups": int(block.resnets[0].norm1.num_groups),
        "num_class_embeds": model.num_class_embeds,
    }


def _labels(batch: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randint(0, NUM_CLASSES, (batch,), generator=gen).to(device)


def ours_train(size: int, args, device: torch.device, sdpa: bool = False, channels_last: bool = False) -> Workload:
    """One optimiser step: ``ClassConditionedDiffusionInferer`` (DDPM forward process, CFG label dropout)."""
    from monai.networks.schedulers import DDPMScheduler

    from monai_synth.inferers import ClassConditionedDiffusionInferer

    torch.manual_seed(0)
    model = ours_network(sdpa=sdpa).to(device).train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    inferer = ClassConditionedDiffusionInferer(
        DDPMScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS), num_classes=NUM_CLASSES, cond_drop_prob=0.1
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    gen = torch.Generator(device="cpu").manual_seed(0)
    images = (torch.rand(args.batch, 1, size, size, generator=gen) * 2 - 1).to(device)
    labels = _labels(args.batch, device)

    def step() -> None:
        noise = torch.randn_like(images)
        t = torch.randint(0, NUM_TRAIN_TIMESTEPS, (args.batch,), device=device)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=args.amp):
            pred = inferer(images, model, noise, t, class_labels=labels)
            loss = F.mse_loss(pred.float(), noise)
        loss.backward()
        opt.step()

    t0 = torch.randint(0, NUM_TRAIN_TIMESTEPS, (args.batch,), generator=gen).to(device)
    return Workload(
        step=step,
        items=args.batch,
        params=num_params(model),
        config={
            "library": "monai_synth",
            "model": "DiffusionModelUNet",
            "inferer": "ClassConditionedDiffusionInferer",
            "optimizer": "Adam",
            "cond_drop_prob": 0.1,
            "sdpa": sdpa,
            "channels_last": channels_last,
            "network": "monai_synth.engines.build_diffusion_unet(num_classes=2)",
        },
        model=model,
        forward=lambda: model(images, t0, class_labels=labels),
    )


def _ours_sampler(
    args,
    device: torch.device,
    fast: bool,
    compile: bool = False,
    steps: int | None = None,
    size: int = 28,
    guidance_factory: Callable[[torch.Tensor], Any] | None = None,
    batch: int | None = None,
) -> Workload:
    from monai.networks.schedulers import DDIMScheduler

    from monai_synth.inferers import sample

    steps = steps or args.steps
    batch = batch or args.sample_batch
    torch.manual_seed(0)
    model = ours_network().to(device).eval()
    levers: dict[str, Any] = {"inference_mode": True, "cfg_passes": "1 batched forward of 2B"}
    if fast:
        if compile and args.compile_cache:
            enable_compile_cache(args.compile_cache)
        model = optimize_for_inference(model, channels_last=args.channels_last, sdpa=not args.no_sdpa, compile=compile)
        levers.update({"sdpa": not args.no_sdpa, "channels_last": args.channels_last, "compile": compile})
    scheduler = DDIMScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS)
    labels = _labels(batch, device)
    gen = torch.Generator(device=device).manual_seed(0)
    guidance = None
    if guidance_factory is not None:
        guidance = guidance_factory(torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(1)).to(device))

    def step() -> torch.Tensor:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=args.amp):
            return sample(
                model,
                scheduler,
                shape=(batch, 1, size, size),
                class_labels=labels,
                guidance_scale=args.guidance_scale,
                generator=gen,
                guidance=guidance,
                num_inference_steps=steps,
            )

    x2 = torch.randn(2 * batch, 1, size, size, generator=torch.Generator().manual_seed(2)).to(device)
    t2 = torch.full((2 * batch,), 500, dtype=torch.long, device=device)
    y2 = torch.cat([labels, torch.full_like(labels, NUM_CLASSES)])

    def forward() -> torch.Tensor:
        with torch.inference_mode():
            return model(x2, timesteps=t2, class_labels=y2)

    return Workload(
        step=step,
        items=batch,
        params=num_params(model),
        config={
            "library": "monai_synth",
            "sampler": "monai_synth.inferers.sample + DDIMScheduler (eta 0)",
            "steps": steps,
            "guidance_scale": args.guidance_scale,
            "size": size,
            "batch": batch,
            "guided": guidance is not None,
            **levers,
        },
        model=model,
        forward=forward,
    )


def _multi_condition(size: int):
    def factory(reference: torch.Tensor):
        from monai_synth.inferers.guidance import anatomy_pathology_guidance

        weight = torch.zeros_like(reference)
        lo, hi = size // 4, size // 4 + size // 2
        weight[..., lo:hi, lo:hi] = 1.0
        return anatomy_pathology_guidance(reference, reference.flip(-1), weight, anatomy_factor=4, pathology_factor=2)

    return factory


def _dicom_dir(args) -> Path:
    if args.dicom_dir:
        path = Path(args.dicom_dir)
    else:
        from monai_synth.utils.shared_data import shared_data_path

        path = shared_data_path("lung_ct_dicom_lungpetctdx_A0001", "dicom") or Path("/nonexistent")
    if not path.is_dir() or not any(path.glob("*.dcm")):
        raise SkipCase(f"DICOM series folder {path} is absent (pass --dicom-dir or set MONAI_SYNTH_SHARED).")
    return path


def dicom_pipeline(kind: str, args, cached: bool) -> Workload:
    """DICOM series -> lung-windowed [0, 1] tensor, ours (reader + ScaleToHU + HUWindow) vs plain MONAI."""
    from monai.data import CacheDataset, Dataset
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, ScaleIntensityRanged

    folder = _dicom_dir(args)
    n_slices = len(list(folder.glob("*.dcm")))
    data = [{"image": str(folder)} for _ in range(args.dicom_copies)]
    level, width = -600.0, 1500.0  # lung window (Radiopaedia), HU
    if kind == "ours":
        try:
            from monai_synth.data import ClinicalDicomReader
            from monai_synth.transforms import HUWindowd, ScaleToHUd
        except ImportError as err:
            raise SkipCase(f"monai_synth DICOM reader / HU transforms unavailable: {err}") from err
        transform = Compose(
            [
                LoadImaged("image", reader=ClinicalDicomReader()),
                EnsureChannelFirstd("image"),
                ScaleToHUd("image"),
                HUWindowd("image", window="lung", output_range=(0.0, 1.0)),
            ]
        )
        desc = "LoadImaged(ClinicalDicomReader) + ScaleToHUd + HUWindowd(lung)"
    else:
        transform = Compose(
            [
                LoadImaged("image", reader="PydicomReader"),
                EnsureChannelFirstd("image"),
                ScaleIntensityRanged(
                    "image", a_min=level - width / 2, a_max=level + width / 2, b_min=0.0, b_max=1.0, clip=True
                ),
            ]
        )
        desc = "LoadImaged(PydicomReader) + ScaleIntensityRanged(lung window)"
    if cached:
        dataset = CacheDataset(data, transform, cache_rate=1.0, num_workers=0, progress=False)
    else:
        dataset = Dataset(data, transform)

    def step() -> torch.Tensor:
        last = None
        for i in range(len(dataset)):
            last = dataset[i]["image"]
        return last

    return Workload(
        step=step,
        items=n_slices * len(data),
        params=0,
        config={
            "pipeline": desc,
            "cached": cached,
            "series": str(folder),
            "slices_per_series": n_slices,
            "items_per_epoch": len(data),
            "cache": "CacheDataset(cache_rate=1) filled before timing"
            if cached
            else "none (OS page cache warm after warm-up)",
            "dataloader": "direct indexing, no workers",
        },
    )


def compare_volumes(a: torch.Tensor, b: torch.Tensor) -> dict[str, Any]:
    """Max |a - b| of two channel-first MetaTensors after flipping ``b`` along axes whose affine signs differ.

    Readers may stack slices in opposite orders (both consistent with their affine); aligning by the affine
    compares the same voxels.
    """
    flipped = []
    if hasattr(a, "affine") and hasattr(b, "affine"):
        for i in range(a.ndim - 1):
            if float(a.affine[i, i]) * float(b.affine[i, i]) < 0:
                flipped.append(i + 1)
    b_aligned = torch.as_tensor(b).flip(flipped) if flipped else torch.as_tensor(b)
    same = tuple(a.shape) == tuple(b_aligned.shape)
    return {
        "shapes": [list(a.shape), list(b.shape)],
        "axes_flipped_to_align_affines": flipped,
        "max_abs_diff": float((torch.as_tensor(a) - b_aligned).abs().max()) if same else None,
    }


def build_cases(args, device: torch.device) -> dict[str, Callable[[], Workload]]:
    """Every case by name -> a zero-argument factory (so a subprocess can build just one)."""
    lucid = {"dim": args.lucidrains_dim, "dim_mults": (1, 2, 4), "amp": args.amp}
    ours_cfg = ours_network_config()
    mirror = {k: ours_cfg[k] for k in ("channels", "attention_levels", "head_channels", "norm_num_groups")}
    mirror["num_res_blocks"] = ours_cfg["num_res_blocks"][0]
    cases: dict[str, Callable[[], Workload]] = {}
    for size in args.sizes:
        cases[f"train/ours/{size}"] = lambda s=size: ours_train(s, args, device)
        cases[f"train/lucidrains/{size}"] = lambda s=size: peers.lucidrains_train(
            s, args.batch, NUM_CLASSES, device, **lucid
        )
        cases[f"train/diffusers/{size}"] = lambda s=size: peers.diffusers_train(
            s, args.batch, NUM_CLASSES, device, unet_kwargs=mirror, amp=args.amp
        )
    sample_kw = {"steps": args.steps, "guidance_scale": args.guidance_scale}
    cases["sample/ours/28"] = lambda: _ours_sampler(args, device, fast=False)
    cases["sample/ours-fast/28"] = lambda: _ours_sampler(args, device, fast=True)
    if args.compile:  # the first (warm-up) call compiles: 1-2 min on a small CPU
        cases["sample/ours-compiled/28"] = lambda: _ours_sampler(args, device, fast=True, compile=True)
    cases["sample/lucidrains/28"] = lambda: peers.lucidrains_sample(
        28, args.sample_batch, NUM_CLASSES, device, **sample_kw, **lucid
    )
    cases["sample/diffusers/28"] = lambda: peers.diffusers_sample(
        28, args.sample_batch, NUM_CLASSES, device, **sample_kw, unet_kwargs=mirror, amp=args.amp
    )
    cases["guided/unguided/28"] = lambda: _ours_sampler(args, device, fast=True)
    cases["guided/multi-condition/28"] = lambda: _ours_sampler(
        args, device, fast=True, guidance_factory=_multi_condition(28)
    )
    for kind in ("ours", "monai"):
        for cached in (False, True):
            cases[f"dicom/{kind}/{'cached' if cached else 'cold'}"] = lambda k=kind, c=cached: dicom_pipeline(
                k, args, c
            )
    return cases


# ---------------------------------------------------------------------------------------------- measuring
def _proc_status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _maxrss_mb() -> float:
    """Peak RSS of this process image in MiB.

    ``VmHWM`` (Linux) belongs to the current address space only. ``ru_maxrss`` is a fallback: after fork+exec it
    also remembers the *parent's* RSS at fork time, so in a child it can report the parent's size.
    """
    hwm = _proc_status_mb("VmHWM")
    if hwm is not None:
        return hwm
    scale = 1.0 / 1024 if sys.platform != "darwin" else 1.0 / 2**20  # KiB on Linux, bytes on macOS
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _current_rss_mb() -> float | None:
    return _proc_status_mb("VmRSS")


def _reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark to the current RSS (Linux >= 4.0, ``/proc/self/clear_refs``).

    Without it ``ru_maxrss`` keeps the spike of importing torch/MONAI/diffusers, which can hide a case's peak.
    """
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def memory_child(args) -> None:
    """Child mode: build one case, run it twice, print its peak memory as one JSON line."""
    device = torch.device(args.device)
    set_num_threads(args.threads, args.interop_threads)
    cases = build_cases(args, device)
    result: dict[str, Any] = {"case": args.memory_case}
    try:
        workload = cases[args.memory_case]()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        setup_peak = _maxrss_mb()
        reset = _reset_peak_rss()
        base_rss = _current_rss_mb() if reset else setup_peak
        workload.step()
        workload.step()
        peak = _maxrss_mb()
        result.update(
            {
                "method": "fresh process running only this case: RSS high-water mark (VmHWM) reset after setup "
                "(/proc/self/clear_refs), then read after 2 calls"
                if reset
                else "fresh process running only this case: peak RSS after 2 calls minus peak RSS after setup",
                "setup_peak_rss_mb": round(setup_peak, 1),
                "rss_before_steps_mb": None if base_rss is None else round(base_rss, 1),
                "peak_rss_mb": round(max(peak, setup_peak), 1),
                "step_peak_rss_mb": round(peak, 1),
                "step_rss_delta_mb": None if base_rss is None else round(peak - base_rss, 1),
            }
        )
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            cuda_peak = torch.cuda.max_memory_allocated(device)
            result.update(
                {
                    "cuda_method": "torch.cuda.max_memory_allocated over 2 calls",
                    "cuda_peak_mb": round(cuda_peak / 2**20, 1),
                    "cuda_step_delta_mb": round((cuda_peak - base) / 2**20, 1),
                }
            )
    except (SkipCase, PeerUnavailable) as err:
        result["skipped"] = str(err)
    print("MEMORY_JSON " + json.dumps(result), flush=True)


def measure_memory(case: str, argv: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--memory-case", case]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    except subprocess.TimeoutExpired:
        return {"error": "memory subprocess timed out (900 s)"}
    for line in proc.stdout.splitlines():
        if line.startswith("MEMORY_JSON "):
            return json.loads(line[len("MEMORY_JSON ") :])
    return {"error": f"memory subprocess failed (rc={proc.returncode}): {proc.stderr.strip()[-500:]}"}


def run_case(name: str, factory: Callable[[], Workload], args, device: torch.device) -> tuple[dict, Workload | None]:
    """Build and time one case; returns its JSON record and the workload (None when skipped)."""
    try:
        start = time.perf_counter()
        workload = factory()
        setup_s = time.perf_counter() - start
        stats = time_call(workload.step, repeats=args.repeats, warmup=args.warmup, device=device)
    except (SkipCase, PeerUnavailable) as err:
        logger.warning("skip %s: %s", name, err)
        return {"skipped": str(err)}, None
    except Exception as err:  # a broken peer must not kill the whole run
        logger.error("case %s failed:\n%s", name, traceback.format_exc())
        return {"error": f"{type(err).__name__}: {err}"}, None
    record = {
        "items_per_s": workload.items / stats.median,
        "median_s": stats.median,
        "min_s": stats.minimum,
        "times_s": list(stats.times),
        "items_per_call": workload.items,
        "params": workload.params,
        "setup_s": setup_s,
        "config": workload.config,
    }
    logger.info(
        "%-28s %10.2f items/s  (median %.4f s over %d)", name, record["items_per_s"], stats.median, args.repeats
    )
    return record, workload


def run_group(
    names: list[str], factories: dict[str, Callable[[], Workload]], args, device: torch.device
) -> dict[str, tuple[dict, Workload | None]]:
    """Time the cases of one comparison round-robin: every repeat times each library once, in turn.

    Timing the libraries one after another let slow drift of the machine (frequency, allocator warm-up, a neighbour)
    fall on one library: on the 2-core CPU the case measured first came out up to 1.3x slower than the same network
    measured later. Interleaving spreads such drift evenly.
    """
    out: dict[str, tuple[dict, Workload | None]] = {}
    live: dict[str, tuple[Workload, float]] = {}
    for name in names:
        try:
            start = time.perf_counter()
            workload = factories[name]()
            setup_s = time.perf_counter() - start
            for _ in range(args.warmup):
                workload.step()
            live[name] = (workload, setup_s)
        except (SkipCase, PeerUnavailable) as err:
            logger.warning("skip %s: %s", name, err)
            out[name] = ({"skipped": str(err)}, None)
        except Exception as err:  # a broken peer must not kill the whole run
            logger.error("case %s failed:\n%s", name, traceback.format_exc())
            out[name] = ({"error": f"{type(err).__name__}: {err}"}, None)
    times: dict[str, list[float]] = {name: [] for name in live}
    for _ in range(args.repeats):
        for name, (workload, _) in live.items():
            times[name].append(time_call(workload.step, repeats=1, warmup=0, device=device).median)
    for name, (workload, setup_s) in live.items():
        median = statistics.median(times[name])
        out[name] = (
            {
                "items_per_s": workload.items / median,
                "median_s": median,
                "min_s": min(times[name]),
                "times_s": times[name],
                "items_per_call": workload.items,
                "params": workload.params,
                "setup_s": setup_s,
                "config": workload.config,
                "timing": f"round-robin with {', '.join(live)}",
            },
            workload,
        )
        logger.info("%-28s %10.2f items/s  (median %.4f s over %d, round-robin)", name, workload.items / median,
                    median, args.repeats)  # fmt: skip
    return {name: out[name] for name in names}


def _comparison_group(name: str) -> str | None:
    """``train/<lib>/<size>`` and ``sample/<lib>/<size>`` cases are compared across libraries: group key."""
    parts = name.split("/")
    return f"{parts[0]}/{parts[2]}" if len(parts) == 3 and parts[0] in ("train", "sample") else None


def _metric(value: Any, config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"value": value, "config": config, **extra}


def _rate(cases: dict, name: str) -> float | None:
    return cases.get(name, {}).get("items_per_s")


def _ratio(cases: dict, a: str, b: str) -> float | None:
    ra, rb = _rate(cases, a), _rate(cases, b)
    return None if ra is None or rb is None else ra / rb


def _why(cases: dict, *names: str) -> str | None:
    for n in names:
        rec = cases.get(n)
        if rec is None:
            return f"{n} not run"
        if "items_per_s" not in rec:
            return f"{n}: {rec.get('skipped') or rec.get('error')}"
    return None


# ---------------------------------------------------------------------------------------------- levers
def measure_levers(args, device: torch.device) -> dict[str, Any]:
    """Speed levers of the sampling hot path, each relative to the plain eager forward."""
    out: dict[str, Any] = {}
    batch = args.sample_batch
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, 28, 28, generator=gen).to(device)
    x2 = torch.cat([x, x])
    t = torch.full((batch,), 500, dtype=torch.long, device=device)
    t2 = torch.cat([t, t])
    y = _labels(batch, device)
    y2 = torch.cat([y, torch.full_like(y, NUM_CLASSES)])
    torch.manual_seed(0)
    base = ours_network().to(device).eval()

    def timed(fn: Callable[[], Any], ctx: str = "inference_mode") -> float:
        def call():
            if ctx == "no_grad":
                with torch.no_grad():
                    return fn()
            with torch.inference_mode():
                return fn()

        return time_call(call, repeats=max(args.repeats, 3), warmup=args.warmup, device=device).median

    cfg_step = {"what": "one CFG denoiser step at 28 px", "batch": batch, "forward_batch": 2 * batch}
    ref = timed(lambda: base(x2, t2, class_labels=y2), ctx="no_grad")
    rows = {
        "no_grad (baseline)": ref,
        "inference_mode": timed(lambda: base(x2, t2, class_labels=y2)),
        "cfg as 2 separate forwards of B": timed(
            lambda: (base(x, t, class_labels=y), base(x, t, class_labels=y2[batch:]))
        ),
    }
    sdpa = copy.deepcopy(base)
    enable_sdpa_attention(sdpa)
    rows["inference_mode + sdpa"] = timed(lambda: sdpa(x2, t2, class_labels=y2))
    cl = copy.deepcopy(base).to(memory_format=torch.channels_last)
    rows["inference_mode + channels_last"] = timed(lambda: cl(x2, t2, class_labels=y2))
    both = optimize_for_inference(copy.deepcopy(base), channels_last=True, sdpa=True)
    rows["inference_mode + sdpa + channels_last"] = timed(lambda: both(x2, t2, class_labels=y2))
    if args.compile:
        if args.compile_cache:
            enable_compile_cache(args.compile_cache)
        compiled = optimize_for_inference(
            copy.deepcopy(base), channels_last=args.channels_last, sdpa=not args.no_sdpa, compile=True
        )
        start = time.perf_counter()
        with torch.inference_mode():
            compiled(x2, t2, class_labels=y2)
        out["compile_warmup_s"] = time.perf_counter() - start
        rows["torch.compile (after warm-up)"] = timed(lambda: compiled(x2, t2, class_labels=y2))
    else:
        out["compile"] = "skipped (pass --compile; 70-130 s compile on a small CPU)"
    threads_now = torch.get_num_threads()
    if threads_now > 1:
        torch.set_num_threads(1)
        try:
            rows["inference_mode, 1 thread"] = timed(lambda: base(x2, t2, class_labels=y2))
        finally:
            torch.set_num_threads(threads_now)
    out["forward"] = {k: {"median_s": v, "speedup_vs_baseline": ref / v} for k, v in rows.items()}
    out["forward_config"] = {**cfg_step, "threads": threads_now}

    # sampling batch size: per-image cost of one CFG step (a forward of 2B) at several B
    per_image = {}
    for b in (16, 32, 64, 128, 256):
        xb = torch.randn(2 * b, 1, 28, 28, generator=torch.Generator().manual_seed(3)).to(device)
        tb = torch.full((2 * b,), 500, dtype=torch.long, device=device)
        yb = torch.cat([_labels(b, device), torch.full((b,), NUM_CLASSES, dtype=torch.long, device=device)])
        median = timed(lambda xb=xb, tb=tb, yb=yb: sdpa(xb, tb, class_labels=yb))
        per_image[str(b)] = {"cfg_step_ms_per_image": 1000.0 * median / b, "img_steps_per_s": b / median}
    out["sampling_batch"] = per_image

    steps_rows = {}
    for steps in sorted({args.steps, max(1, args.steps // 2), max(1, round(args.steps * 0.4))}, reverse=True):
        record, _ = run_case(
            f"levers/ddim{steps}", lambda s=steps: _ours_sampler(args, device, fast=True, steps=s), args, device
        )
        steps_rows[f"DDIM {steps} steps"] = record.get("items_per_s")
    out["sampling_steps_img_per_s"] = steps_rows

    train_rows = {}
    size = args.sizes[0]
    for label, kw in {"default": {}, "sdpa": {"sdpa": True}, "channels_last": {"channels_last": True}}.items():
        record, _ = run_case(f"levers/train-{label}", lambda kw=kw: ours_train(size, args, device, **kw), args, device)
        train_rows[label] = record.get("items_per_s")
    out["train_img_per_s"] = {"size": size, "batch": args.batch, **train_rows}
    return out


# ---------------------------------------------------------------------------------------------- main
def evaluate_targets(results: dict[str, Any]) -> dict[str, Any]:
    targets = {}
    for name, metric, op, threshold in TARGETS:
        value = results.get(metric, {}).get("value")
        ok = None if value is None else (value >= threshold if op == ">=" else value < threshold)
        targets[name] = {"metric": metric, "op": op, "threshold": threshold, "value": value, "pass": ok}
    return targets


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.memory_case:
        memory_child(args)
        return {}
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was requested but torch.cuda.is_available() is False.")
    threads = set_num_threads(args.threads, args.interop_threads)
    started = time.perf_counter()
    results: dict[str, Any] = {
        "schema": 1,
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "note": "--quick: tiny sizes, not representative; do not report these figures." if args.quick else "",
        "args": {k: v for k, v in vars(args).items() if k != "memory_case"},
        "machine": {**machine_info(device, PEER_PACKAGES), **threads},
        "network": ours_network_config(),
    }

    peak = matmul_peak_gflops(size=512 if args.quick else 2048, repeats=args.repeats, warmup=args.warmup, device=device)
    results["matmul_peak_gflops"] = _metric(
        peak,
        {"op": "torch.mm float32 square", "n": 512 if args.quick else 2048, "statistic": f"median of {args.repeats}"},
    )
    logger.info("float32 matmul peak: %.1f GFLOP/s", peak)

    cases: dict[str, dict] = {}
    workloads: dict[str, Workload] = {}
    factories = build_cases(args, device)
    groups: dict[str, list[str]] = {}
    for name in factories:
        if any(name.startswith(prefix) for prefix in args.skip):
            continue
        key = _comparison_group(name)
        if key is not None:
            groups.setdefault(key, []).append(name)
    done: set[str] = set()
    for name, factory in factories.items():
        if name in done:
            continue
        if any(name.startswith(prefix) for prefix in args.skip):
            cases[name] = {"skipped": "--skip"}
            continue
        key = _comparison_group(name)
        if key is not None:
            measured = run_group(groups[key], factories, args, device)
        else:
            measured = {name: run_case(name, factory, args, device)}
        for case, (record, workload) in measured.items():
            done.add(case)
            cases[case] = record
            if workload is not None and (workload.model is not None or case.endswith("/cold")):
                workloads[case] = workload
    results["cases"] = cases

    # ---- headline metrics
    s0 = args.sizes[0]
    train_cfg = {
        "size": s0,
        "batch": args.batch,
        "threads": threads["num_threads"],
        "device": str(device),
        "amp": args.amp,
        "step": "forward + MSE + backward + Adam",
        "statistic": f"median of {args.repeats}",
    }
    by_size = {s: _rate(cases, f"train/ours/{s}") for s in args.sizes}
    results["train_img_per_s"] = _metric(
        _rate(cases, f"train/ours/{s0}"), train_cfg, by_size=by_size, skipped=_why(cases, f"train/ours/{s0}")
    )
    for peer in ("lucidrains", "diffusers"):
        ratios = {s: _ratio(cases, f"train/ours/{s}", f"train/{peer}/{s}") for s in args.sizes}
        params = {who: cases.get(f"train/{who}/{s0}", {}).get("params") for who in ("ours", peer)}
        results[f"train_ratio_vs_{peer}"] = _metric(
            ratios[s0],
            {**train_cfg, "params": params},
            by_size=ratios,
            skipped=_why(cases, f"train/ours/{s0}", f"train/{peer}/{s0}"),
        )

    fast = "sample/ours-fast/28"
    if "items_per_s" in cases.get("sample/ours-compiled/28", {}):
        fast = "sample/ours-compiled/28"  # --compile: the compiled fast path is the headline
    sample_cfg = {
        "size": 28,
        "batch": args.sample_batch,
        "steps": args.steps,
        "sampler": "DDIM eta 0",
        "guidance_scale": args.guidance_scale,
        "threads": threads["num_threads"],
        "device": str(device),
        "amp": args.amp,
        "path": cases.get(fast, {}).get("config"),
        "statistic": f"median of {args.repeats}",
    }
    results["sample_cfg_img_per_s"] = _metric(
        _rate(cases, fast), sample_cfg, default_path_img_per_s=_rate(cases, "sample/ours/28"), skipped=_why(cases, fast)
    )
    for peer in ("lucidrains", "diffusers"):
        results[f"sample_ratio_vs_{peer}"] = _metric(
            _ratio(cases, fast, f"sample/{peer}/28"),
            sample_cfg,
            default_path_ratio=_ratio(cases, "sample/ours/28", f"sample/{peer}/28"),
            skipped=_why(cases, fast, f"sample/{peer}/28"),
        )

    # ---- 1000 images
    rate = _rate(cases, fast)
    cfg_1000 = {**sample_cfg, "n_images": 1000}
    if rate is None:
        results["time_1000_cfg_images_s"] = _metric(None, cfg_1000, skipped=_why(cases, fast))
    elif args.no_1000:
        results["time_1000_cfg_images_s"] = _metric(1000.0 / rate, {**cfg_1000, "method": "extrapolated 1000/rate"})
    else:
        chunk = max(args.sample_batch, 250)
        w = _ours_sampler(args, device, fast=True, batch=chunk)
        w.step()  # warm-up at this batch
        start = time.perf_counter()
        done = 0
        while done < 1000:
            w.step()
            done += chunk
        elapsed = time.perf_counter() - start
        results["time_1000_cfg_images_s"] = _metric(
            elapsed * 1000.0 / done, {**cfg_1000, "method": f"timed {done} images in batches of {chunk}"}
        )

    # ---- guided overhead
    g_cfg = {**sample_cfg, "guidance": "anatomy_pathology_guidance (2 conditions, n=4 and n=2, all steps)"}
    ratio = _ratio(cases, "guided/unguided/28", "guided/multi-condition/28")
    results["guided_overhead"] = _metric(
        None if ratio is None else ratio - 1.0,
        g_cfg,
        skipped=_why(cases, "guided/unguided/28", "guided/multi-condition/28"),
    )

    # ---- DICOM
    for temp in ("cold", "cached"):
        results[f"dicom_slices_per_s_{temp}"] = _metric(
            _rate(cases, f"dicom/ours/{temp}"),
            cases.get(f"dicom/ours/{temp}", {}).get("config", {}),
            monai_slices_per_s=_rate(cases, f"dicom/monai/{temp}"),
            skipped=_why(cases, f"dicom/ours/{temp}"),
        )
    results["dicom_slices_per_s"] = results["dicom_slices_per_s_cold"]
    if "dicom/ours/cold" in workloads and "dicom/monai/cold" in workloads:
        results["dicom_output_check"] = compare_volumes(
            workloads["dicom/ours/cold"].step(), workloads["dicom/monai/cold"].step()
        )
    results["dicom_ratio_vs_monai"] = _metric(
        _ratio(cases, "dicom/ours/cold", "dicom/monai/cold"),
        {"statistic": "cold slices/s ratio"},
        cached_ratio=_ratio(cases, "dicom/ours/cached", "dicom/monai/cached"),
        skipped=_why(cases, "dicom/ours/cold", "dicom/monai/cold"),
    )

    # ---- FLOPs and fraction of peak
    wl = workloads.get(fast)
    if wl is not None and wl.forward is not None:
        flops = count_flops(wl.forward)
        t_fwd = time_call(wl.forward, repeats=max(args.repeats, 3), warmup=args.warmup, device=device).median
        achieved = flops / t_fwd / 1e9
        results["unet_forward_gflop"] = _metric(
            flops / 1e9,
            {"counter": "torch.utils.flop_counter.FlopCounterMode", "input": [2 * args.sample_batch, 1, 28, 28]},
        )
        results["unet_fraction_of_peak"] = _metric(
            achieved / peak,
            {
                "what": "CFG denoiser forward (2B batch), fast path, inference_mode",
                "batch": 2 * args.sample_batch,
                "achieved_gflops": achieved,
                "matmul_peak_gflops": peak,
                "forward_s": t_fwd,
            },
        )
    else:
        results["unet_fraction_of_peak"] = _metric(None, {}, skipped=_why(cases, fast))
    train_fracs = {}
    for name, w in workloads.items():
        if name.startswith("train/") and w.forward is not None:
            train_fracs[name] = count_flops(w.forward) * 3 / cases[name]["median_s"] / 1e9 / peak
    results["train_fraction_of_peak"] = _metric(train_fracs, {"method": "3 x forward FLOPs per step / step time"})
    workloads.clear()

    # ---- levers
    try:
        results["levers"] = measure_levers(args, device)
    except Exception as err:  # levers are secondary: never lose the headline figures
        logger.error("levers failed:\n%s", traceback.format_exc())
        results["levers"] = {"error": f"{type(err).__name__}: {err}"}

    # ---- memory
    if args.no_memory:
        results["memory"] = {"skipped": "--no-memory"}
    else:
        results["memory"] = {name: measure_memory(name, argv) for name, rec in cases.items() if "items_per_s" in rec}

    results["targets"] = evaluate_targets(results)
    results["duration_s"] = time.perf_counter() - started
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(results, indent=2, default=str))
    os.replace(tmp, out)
    logger.info("wrote %s (%.0f s)", out, results["duration_s"])
    for name, t in results["targets"].items():
        logger.info("target %-42s value=%s pass=%s", name, t["value"], t["pass"])
    return results


if __name__ == "__main__":
    main()
