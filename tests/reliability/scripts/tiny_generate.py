"""Tiny generate_dataset run used by the SIGKILL fault test (not a test module).

Usage: ``python tiny_generate.py OUT_DIR [--pause-at-replace N] [--refs REFS.npy]``. With ``--refs`` the near-copy
filter runs inside generation, with those ``(n, 1, H, W)`` images as the training set (threshold 0.99);
``--write-delay S`` sleeps after each written file, so kills land between files.
Prints ``READY`` before sampling, ``WROTE <path>``
after each image file and ``DONE`` at the end. With ``--pause-at-replace N`` the N-th atomic rename (``os.replace``)
first truncates the finished temporary file to half its size, prints ``IN_WRITE`` and sleeps, so the parent can
SIGKILL the process in the middle of writing an image.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

KWARGS = dict(
    num_per_class=6, num_classes=2, image_size=16, formats=("png", "dicom", "nifti"), num_inference_steps=4,
    batch_size=4, seed=0, progress=False,
)  # fmt: skip


def make_model_and_scheduler():
    from monai_synth.engines.diffusion import build_diffusion_unet, build_scheduler

    torch.manual_seed(0)
    net = build_diffusion_unet(
        num_classes=2, channels=(8, 8), attention_levels=(False, False), norm_num_groups=8, num_head_channels=8
    )
    return net.eval(), build_scheduler("ddim", num_train_timesteps=20)


def make_filter(refs):
    """The near-copy filter over the images saved in ``refs`` (None: no filter)."""
    if refs is None:
        return None
    import numpy as np

    from monai_synth.engines import build_near_copy_filter

    return build_near_copy_filter(np.load(refs), threshold=0.99)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    parser.add_argument("--pause-at-replace", type=int, default=None)
    parser.add_argument("--refs", default=None)
    parser.add_argument("--write-delay", type=float, default=0.0, help="seconds to sleep after each written file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from monai_synth.engines import generate

    real_write = generate.write_image

    def write_image(image, path, fmt, dicom_kwargs=None):
        out = real_write(image, path, fmt, dicom_kwargs=dicom_kwargs)
        print(f"WROTE {path}", flush=True)
        time.sleep(args.write_delay)  # lets a SIGKILL land between two files
        return out

    generate.write_image = write_image
    if args.pause_at_replace is not None:
        real_replace, calls = os.replace, [0]

        def replace(src, dst, *a, **k):
            calls[0] += 1
            if calls[0] == args.pause_at_replace:
                with open(src, "rb+") as fh:
                    fh.truncate(fh.seek(0, 2) // 2)
                print(f"IN_WRITE {dst}", flush=True)
                time.sleep(60)
            return real_replace(src, dst, *a, **k)

        os.replace = replace
    model, sched = make_model_and_scheduler()
    print("READY", flush=True)
    generate.generate_dataset(model, sched, args.out_dir, **KWARGS, near_copy_filter=make_filter(args.refs))
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
