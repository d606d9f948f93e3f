"""Where a training step spends its time: our ``DiffusionModelUNet`` against diffusers ``UNet2DModel`` (same blocks).

Usage::

    python benchmarks/profile_train_step.py --threads 2 --out profile.json

Both networks are built exactly as in ``benchmarks/run.py`` (the diffusers model mirrors our block layout with the
same parameter count), trained for ``--steps`` profiled optimiser steps after ``--warmup`` untimed ones, and the
PyTorch profiler's per-operator self CPU time is written to JSON (top ``--top`` operators of each) together with
whole-step medians. Run it alone on the machine: a second busy process distorts every figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import peers
import torch
from run import NUM_CLASSES, ours_network_config, ours_train
from torch.profiler import ProfilerActivity, profile


def _profile(workload, steps: int, warmup: int, top: int) -> dict:
    for _ in range(warmup):
        workload.step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        workload.step()
        times.append(time.perf_counter() - t0)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            workload.step()
    table = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in table) or 1.0
    return {
        "step_median_s": statistics.median(times),
        "img_per_s": workload.items / statistics.median(times),
        "params": workload.params,
        "ops": [
            {
                "op": e.key,
                "calls_per_step": e.count / steps,
                "self_ms_per_step": e.self_cpu_time_total / 1000.0 / steps,
                "share": e.self_cpu_time_total / total,
            }
            for e in table[:top]
        ],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--sdpa", action="store_true", help="our network with PyTorch SDPA attention")
    parser.add_argument("--out", default="profile_train_step.json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = ours_network_config()
    mirror = {k: cfg[k] for k in ("channels", "attention_levels", "head_channels", "norm_num_groups")}
    mirror["num_res_blocks"] = cfg["num_res_blocks"][0]
    ns = argparse.Namespace(batch=args.batch, amp=False)
    device = torch.device("cpu")
    result = {
        "config": {"size": args.size, "batch": args.batch, "threads": torch.get_num_threads(), "sdpa": args.sdpa},
        "ours": _profile(ours_train(args.size, ns, device, sdpa=args.sdpa), args.steps, args.warmup, args.top),
        "diffusers": _profile(
            peers.diffusers_train(args.size, args.batch, NUM_CLASSES, device, unet_kwargs=mirror),
            args.steps,
            args.warmup,
            args.top,
        ),
    }
    for name in ("ours", "diffusers"):
        r = result[name]
        print(f"== {name}: {r['img_per_s']:.1f} img/s, step {r['step_median_s'] * 1000:.0f} ms, {r['params']} params")
        for op in r["ops"][:15]:
            print(f"   {op['op']:<45s} {op['self_ms_per_step']:8.1f} ms/step  x{op['calls_per_step']:.0f}")
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
