"""Add classifier seeds to a finished ``benchmarks/utility.py`` run, without touching its generator or synthetic set.

Usage::

    python benchmarks/utility_seeds.py --work-dir outputs/utility --data PNEUMONIA.npz --rows 9,11,17 \\
        --seeds 0,1,2 --update utility.json

The synthetic set is read back from ``WORK_DIR/synthetic/datalist.json`` (exactly the files the first run trained
its classifiers on), the rows run once per seed into the same MLflow study (finished runs, e.g. the seed-0 runs of
the first call, are found by their config + data key and skipped), and the classifier keys of ``--update`` are
replaced by means over all seeds (``by_row`` keeps every seed's value and the standard deviation). FID and timing
keys are left as they were.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from utility import classifier_figures, seeded_grid


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", required=True, help="the --work-dir of the utility.py run")
    parser.add_argument("--data", required=True, help="the --data of the utility.py run")
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--rows", default="9,11,17")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--classifier-epochs", type=int, default=20)
    parser.add_argument("--update", required=True, help="utility JSON to update in place")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    from monai_synth.apps.augmentation import StudyData, run_study
    from monai_synth.data import items_from_arrays, load_labelled_splits
    from monai_synth.data.datalists import load_datalist_json
    from monai_synth.evaluate import stack_items

    work = Path(args.work_dir)
    datalist = work / "synthetic" / "datalist.json"
    if not datalist.is_file():
        raise SystemExit(f"{str(datalist)!r} does not exist: run benchmarks/utility.py with --work-dir {work} first.")
    data = Path(args.data)
    splits = load_labelled_splits("medmnist" if data.suffix == ".npz" else "folder", data, args.image_size)
    entries = load_datalist_json(datalist, "training")
    synthetic = items_from_arrays(stack_items(entries), [int(e["label"]) for e in entries])
    rows = {int(r) for r in args.rows.split(",") if r.strip()}
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    results = run_study(
        seeded_grid(rows, seeds, args.classifier_epochs),
        StudyData(train=splits["train"], val=splits["val"], test=splits["test"], synthetic=synthetic),
        experiment="synthetic_utility",
        output_dir=work / "study",
        device=args.device,
        progress=False,
        reference="seed000",
    )
    runs = [{"name": r.config.name, "tags": dict(r.config.tags), "run_id": r.run_id, **r.test_metrics} for r in results]
    out_path = Path(args.update)
    out = json.loads(out_path.read_text())
    kept = {r["run_id"] for r in runs}
    others = [
        r for r in out.get("runs", []) if r.get("run_id") not in kept and int(r["tags"]["table2_row"]) not in rows
    ]
    figures = classifier_figures(others + runs)
    fid_target = out.get("targets", {}).get("fid_ratio<=1.5")
    out.update(figures)
    out["targets"]["fid_ratio<=1.5"] = fid_target
    out["runs"] = others + runs
    out["classifier_seeds"] = {f"row{r:02d}": seeds for r in sorted(rows)}
    out_path.write_text(json.dumps(out, indent=1, default=float))
    logging.getLogger("utility_seeds").info("updated %s", out_path)
    return out


if __name__ == "__main__":
    main()
