"""Issue 15, item 5: the pictures users look at are in MLflow, named after what they show.

* every classifier run: ``figures/confusion_matrix.png`` and ``figures/roc.png``;
* the study's parent run: ``comparison/comparison.png`` (accuracy and AUC per arm) beside the table;
* the generator run of the pipeline, and a bundle trained with ``--tracking mlflow``:
  ``sample_grids/sample_grid_epochNNNNN.png`` while it trains.

(These tests live here with the rest of issue 15; their natural homes are tests/engines, tests/test_compare.py,
tests/handlers and tests/bundles.)
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import half_items, tiny_items, tiny_unet
from mlflow import MlflowClient
from monai.networks.schedulers import DDIMScheduler

from monai_synth.apps.augmentation import DiffusionRecipe, compare
from monai_synth.apps.augmentation import study as st
from monai_synth.apps.augmentation.grids import table2_grid
from monai_synth.apps.augmentation.pipeline import _generator
from monai_synth.apps.augmentation.tags import ROLE_TAG
from monai_synth.engines.classification import ClassifierRunConfig, plot_roc_curve
from monai_synth.handlers import SampleGridHandler
from monai_synth.metrics import roc_curve_points
from monai_synth.metrics.classification import roc_auc

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "cxr_cfg_ddpm" / "configs"


def artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id, path)}


def test_roc_points_against_hand_computation():
    positive = np.array([1, 0, 1, 1, 0, 0], bool)
    scores = np.array([0.9, 0.8, 0.7, 0.7, 0.2, 0.7])  # a tie between two positives and a negative at 0.7
    fpr, tpr = roc_curve_points(positive, scores)
    np.testing.assert_allclose(fpr, [0, 0, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 1 / 3, 1, 1])
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(positive.astype(int), scores))  # 6.5 / 9
    with pytest.raises(ValueError, match="positive and negative"):
        roc_curve_points(np.ones(3, bool), np.arange(3.0))
    three = plot_roc_curve(np.array([0, 1, 2, 0, 1, 2]), np.eye(3)[[0, 1, 2, 1, 1, 2]])
    assert len(three.axes[0].lines) == 4  # chance + one one-vs-rest curve per class


@pytest.fixture(scope="module")
def study(tmp_path_factory, mlflow_uri):
    out = tmp_path_factory.mktemp("pictures_study")
    base = ClassifierRunConfig(network="resnet10", epochs=1, batch_size=8, lr=0.01, epoch_length=2)
    grid = [c for c in table2_grid(base) if c.tags["table2_row"] == "1"]  # one arm: a child run and the parent
    data = st.StudyData(train=tiny_items(24, 1), val=tiny_items(8, 2), test=tiny_items(10, 3),
                        synthetic=tiny_items(8, 4))  # fmt: skip
    results = st.run_study(grid, data, tracking_uri=mlflow_uri, experiment="pictures", output_dir=out, study_name="s",
                           progress=False, compare=True)  # fmt: skip
    return results, MlflowClient(mlflow_uri), out


def test_every_classifier_run_logs_confusion_matrix_and_roc(study):
    results, client, _ = study
    for res in results:
        assert {"figures/confusion_matrix.png", "figures/roc.png"} <= artifacts(client, res.run_id, "figures")


def test_parent_run_logs_the_table_and_the_chart_of_the_arms(study):
    _, client, out = study
    exp = client.get_experiment_by_name("pictures").experiment_id
    (parent,) = [r for r in client.search_runs([exp]) if r.data.tags.get(ROLE_TAG) == "parent"]
    logged = artifacts(client, parent.info.run_id, "comparison")
    assert {"comparison/comparison.png", "comparison/comparison.csv", "comparison/comparison.md"} <= logged
    assert (out / "comparison" / "comparison.png").read_bytes()[:4] == b"\x89PNG"


def test_arm_chart_draws_ci_error_bars_when_the_table_has_them():
    table = compare.ComparisonTable(columns=["#", "Acc", "AUC", "Acc CI low", "Acc CI high"])
    table.rows = [{"#": 1, "Acc": 0.8, "AUC": 0.9, "Acc CI low": 0.7, "Acc CI high": 0.85},
                  {"#": 2, "Acc": 0.6, "AUC": 0.7, "Acc CI low": 0.5, "Acc CI high": 0.75}]  # fmt: skip
    fig = compare.plot_arms(table)
    acc, auc = fig.axes
    (bars,) = [c for c in acc.containers if hasattr(c, "has_yerr")]
    assert bars.has_yerr and acc.get_ylabel() == "Acc (95 % CI)" and auc.get_ylabel() == "AUC"
    segments = bars.lines[2][0].get_segments()
    np.testing.assert_allclose([(s[0][1], s[1][1]) for s in segments], [(0.7, 0.85), (0.5, 0.75)])


def test_grid_handler_samples_the_engines_ema_model_with_the_given_eta(tmp_path):
    ema, network = tiny_unet(2, seed=1), tiny_unet(2, seed=2)
    engine = SimpleNamespace(state=SimpleNamespace(epoch=1, max_epochs=1, device=torch.device("cpu")),
                             ema_model=ema, network=network)  # fmt: skip
    kw = {"num_classes": 2, "n_per_class": 2, "num_inference_steps": 3, "log_mlflow": False}
    stochastic = SampleGridHandler(None, DDIMScheduler(num_train_timesteps=10), tmp_path, (1, 8, 8), eta=1.0, **kw)
    assert stochastic.model_of(engine) is ema
    assert stochastic.model_of(SimpleNamespace(network=network)) is network
    deterministic = SampleGridHandler(None, DDIMScheduler(num_train_timesteps=10), tmp_path, (1, 8, 8), **kw)
    a, b = stochastic.generate("cpu", ema), deterministic.generate("cpu", ema)
    assert not torch.allclose(a, b)  # eta reaches the sampler
    assert stochastic.write(engine).name == "samples_epoch00001.png"


TINY_RECIPE = {"image_size": 8, "channels": (32, 32, 32), "epochs": 2, "batch_size": 8, "sample_steps": 2,
               "warmup_iters": 2}  # fmt: skip


@pytest.mark.parametrize(
    "recipe, grids",
    [({}, ["sample_grid_epoch00001.png", "sample_grid_epoch00002.png"]),
     ({"epochs": 3, "train_minutes": 1e-9}, ["sample_grid_epoch00001.png"])],
    ids=["grid-every-half", "time-budget-stops-early"],
)  # fmt: skip
def test_pipeline_generator_run_logs_sample_grids(tmp_path, mlflow_uri, recipe, grids):
    experiment = f"generator_{len(recipe)}"
    r = DiffusionRecipe(**{**TINY_RECIPE, **recipe})
    _generator(half_items(), r, tmp_path / "generator", False, "cpu", False, (mlflow_uri, experiment))
    client = MlflowClient(mlflow_uri)
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags[ROLE_TAG] == "generator"
    assert run.data.params["image_size"] == "8" and {"train_loss", "train_minutes"} <= set(run.data.metrics)
    assert sorted(Path(a).name for a in artifacts(client, run.info.run_id, "sample_grids")) == grids


def test_bundle_with_tracking_mlflow_logs_sample_grids(tmp_path):
    from monai.bundle import run as bundle_run

    tiny = {"image_size": 16, "demo_n_per_class": 4, "recipe#batch_size": 4, "recipe#channels": [8, 8],
            "recipe#attention_levels": [False, False], "recipe#norm_num_groups": 8, "recipe#num_head_channels": 8,
            "recipe#num_train_timesteps": 20, "recipe#sample_steps": 2, "recipe#epochs": 1, "grid_n_per_class": 2,
            "progress": False}  # fmt: skip
    configs = [str(BUNDLE / "common.yaml"), str(BUNDLE / "train.yaml")]
    meta = str(BUNDLE / "metadata.json")
    bundle_run(config_file=configs, meta_file=meta, bundle_root=str(tmp_path), tracking="mlflow", **tiny)
    client = MlflowClient(f"sqlite:///{tmp_path}/outputs/mlruns.db")
    (run,) = client.search_runs([client.get_experiment_by_name("cxr_cfg_ddpm").experiment_id])
    assert "train_loss" in run.data.metrics
    assert artifacts(client, run.info.run_id, "sample_grids") == {"sample_grids/sample_grid_epoch00001.png"}
