"""Figure: real vs synthetic images per class (rows: real class 0, synthetic class 0, real class 1, ...).

Usage::

    python benchmarks/real_vs_synthetic.py --real ../shared/data/pneumoniamnist/pneumoniamnist_reconstructed.npz \\
        --synthetic outputs/utility/synthetic/datalist.json --out docs/images/pneumonia_real_vs_synthetic.png
    python benchmarks/real_vs_synthetic.py --real ../shared/data/kermany_cxr224 --image-size 128 --scale 1 \\
        --synthetic outputs/utility/synthetic/datalist.json --out docs/images/kermany128_real_vs_synthetic.png

``--real`` is a MedMNIST ``.npz`` or a folder data source (``train/``, ``test/`` class folders); its test split is
shown, at ``--image-size`` for a folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", required=True, help="MedMNIST .npz or a folder source (test split is shown)")
    parser.add_argument("--image-size", type=int, default=128, help="size of a folder source's images")
    parser.add_argument("--synthetic", required=True, help="datalist JSON of the synthetic set")
    parser.add_argument("--class-names", default="normal,pneumonia")
    parser.add_argument("--n", type=int, default=12, help="images per row")
    parser.add_argument("--scale", type=int, default=3, help="pixel upscaling of the figure")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    from PIL import Image, ImageDraw

    from monai_synth.data.datalists import load_datalist_json, load_medmnist_npz
    from monai_synth.evaluate import stack_items
    from monai_synth.handlers.sample_grid import make_grid

    if Path(args.real).is_dir():
        import tempfile

        from monai_synth.data import load_labelled_splits

        work = tempfile.mkdtemp()
        test = load_labelled_splits("folder", args.real, image_size=args.image_size, work_dir=work)["test"]
        images = np.stack([np.asarray(it["image"])[0] for it in test]) * 255.0
        labels = np.asarray([int(it["label"]) for it in test])
    else:
        images, labels = load_medmnist_npz(args.real, "test")
    synth = load_datalist_json(args.synthetic, "training")
    names = args.class_names.split(",")
    rows, titles = [], []
    rng = np.random.default_rng(0)
    for c, name in enumerate(names):
        real_idx = rng.permutation(np.flatnonzero(labels == c))[: args.n]
        rows.append(images[real_idx][:, None].astype(np.float32) / 255.0)
        titles.append(f"real {name}")
        items = [it for it in synth if int(it["label"]) == c]
        pick = rng.permutation(len(items))[: args.n]
        rows.append(stack_items([items[i] for i in pick], image_size=images.shape[-1]).numpy())
        titles.append(f"synthetic {name}")
    grid = make_grid(np.concatenate(rows), nrow=args.n, value_range=(0.0, 1.0))
    img = Image.fromarray(grid).resize((grid.shape[1] * args.scale, grid.shape[0] * args.scale), Image.NEAREST)
    label_w = 130
    canvas = Image.new("L", (img.width + label_w, img.height), 255)
    canvas.paste(img, (label_w, 0))
    draw = ImageDraw.Draw(canvas)
    row_h = img.height / len(titles)
    for i, title in enumerate(titles):
        draw.text((4, int(i * row_h + row_h / 2 - 5)), title, fill=0)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return out


if __name__ == "__main__":
    main()
