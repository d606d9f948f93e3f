"""Tiny resumable classifier study used by the SIGKILL fault test (not a test module).

Usage: ``python tiny_study.py OUT_DIR [--compare]``. Runs a 3-run grid with
``monai_synth.apps.augmentation.study.run_study`` into ``sqlite:///OUT_DIR/mlruns.db``; prints ``CREATED <run name>``
each time an MLflow run is created (parent first), ``COMPARE`` when the comparison starts (``--compare``: the study
writes ``OUT_DIR/comparison``) and ``DONE`` at the end.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/: the shared test helpers
from helpers import tiny_items  # noqa: E402


def grid():
    from monai_synth.engines.classification import ClassifierRunConfig

    base = ClassifierRunConfig(network="resnet10", epochs=2, batch_size=8, lr=0.01)
    return [base.replace(name=f"run{s}", seed=s) for s in range(3)]


def data() -> dict:
    return {"train": tiny_items(16, 1), "val": tiny_items(8, 2), "test": tiny_items(8, 3)}


def study_kwargs(out_dir: str, compare: bool = False) -> dict:
    return dict(
        tracking_uri=f"sqlite:///{out_dir}/mlruns.db", experiment="faults", output_dir=out_dir, study_name="s",
        compare=compare, progress=False, device="cpu",
    )  # fmt: skip


def main(out_dir: str, compare: bool = False) -> int:
    import torch

    torch.set_num_threads(1)
    from monai_synth.apps.augmentation import study as study_module
    from monai_synth.apps.augmentation.study import run_study
    from monai_synth.handlers import mlflow_extras as mx

    real_create = mx.create_run

    def create_run(client, exp_id, run_name=None, *args, **kwargs):
        run_id = real_create(client, exp_id, run_name, *args, **kwargs)
        print(f"CREATED {run_name}", flush=True)
        return run_id

    mx.create_run = create_run
    real_compare = study_module.compare_runs

    def compare_runs(*args, **kwargs):
        print("COMPARE", flush=True)
        return real_compare(*args, **kwargs)

    study_module.compare_runs = compare_runs
    run_study(grid(), data(), **study_kwargs(out_dir, compare))
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], "--compare" in sys.argv[2:]))
