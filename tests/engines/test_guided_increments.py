"""Seed 001's chain: labelled guided samples (with / without lesion) -> increments grid -> Table 1 beside the paper."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import tiny_unet
from monai.networks.schedulers import DDIMScheduler

from monai_synth.apps.guided import (
    anatomy_references,
    load_prepared_images,
    resolve_guided_data,
    run_guided_sampling,
    with_boxes,
)
from monai_synth.apps.guided.study import SEED001_TABLE1, labelled_items, run_increments_study, with_positive_fraction
from monai_synth.data.datalists import load_datalist_json


@pytest.fixture(scope="module")
def demo_images(tmp_path_factory):
    d = tmp_path_factory.mktemp("demo")
    return load_prepared_images(resolve_guided_data("mg", demo_dir=d, size=32, n_per_class=10), size=32)


def _sample(images, out, n, fraction):
    model, sched = tiny_unet(num_classes=None), DDIMScheduler(num_train_timesteps=20)
    anatomy, pathology = anatomy_references(images), with_boxes(images)
    return run_guided_sampling(model, sched, anatomy, pathology, out, num_samples=n, num_inference_steps=2,
                               positive_fraction=fraction, class_names=("normal", "mass"))  # fmt: skip


def test_guided_datalist_labels_boxes_and_opaque_ids(demo_images, tmp_path):
    jsons = _sample(demo_images, tmp_path / "s", 10, 0.3)
    listing = json.loads((tmp_path / "s" / "datalist.json").read_text())
    items = listing["training"]
    assert listing["labels"] == {"0": "normal", "1": "mass"} and len(items) == 10
    assert [it["label"] for it in items] == [1, 1, 1] + [0] * 7
    assert all(it["boxes"] and it["pathology_reference"].startswith("ref-") for it in items[:3])
    assert all(it["boxes"] == [] and it["pathology_reference"] is None for it in items[3:])
    assert all(it["anatomy_reference"].startswith("ref-") and "/" not in it["anatomy_reference"] for it in items)
    neg = json.loads(jsons[5].read_text())
    assert "lesion_in_box" not in neg and neg["label"] == 0
    assert json.loads((tmp_path / "s" / "lesion_in_box.json").read_text())["n"] == 3  # lesion samples only
    loaded = load_datalist_json(tmp_path / "s" / "datalist.json")
    assert all(p["image"].startswith(str(tmp_path)) for p in loaded)  # readable by the classifier study
    with pytest.raises(ValueError, match="positive_fraction"):
        _sample(demo_images, tmp_path / "bad", 2, 1.5)


def test_demo_labels_and_positive_fraction(demo_images):
    items = labelled_items(demo_images)
    labels = [it["label"] for it in items]
    assert len(items) == 22 and labels.count(1) == 12  # 10 finding-class + 2 boxed pathology images
    assert all(0.0 <= float(it["image"].min()) and float(it["image"].max()) <= 1.0 for it in items)
    thin = with_positive_fraction(items, 0.1, seed=0)
    assert sum(it["label"] for it in thin) == 1 and len(thin) == 11  # 10 negatives + round(10/9) positive
    assert with_positive_fraction(items, 0.1, 0) == thin  # seeded
    few = with_positive_fraction([{"label": 1}] + [{"label": 0}] * 30, 0.25)
    assert [it["label"] for it in few].count(0) == 3  # too few positives: negatives thinned to 75 %
    with pytest.raises(ValueError, match="both classes"):
        with_positive_fraction([{"label": 0}], 0.1)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        with_positive_fraction(items, 1.0)


def test_increments_study_runs_to_the_table(demo_images, tmp_path):
    torch.manual_seed(0)
    _sample(demo_images, tmp_path / "s", 20, 0.1)
    report = run_increments_study(
        demo_images, tmp_path / "s" / "datalist.json", tmp_path / "study", steps=2, progress=False,
        classifier={"network": "resnet10", "epochs": 1, "batch_size": 8, "epoch_length": 1},
    )  # fmt: skip
    # real: 22 labelled -> stratified 60/20/20 -> training thinned to 10 % lesion images
    assert report["real_train_used"] < report["real"]["training"]
    assert report["increments"][0] == 0 and len(report["increments"]) == 3
    rows = report["rows"]
    assert [r["synthetic_added"] for r in rows] == report["increments"]
    assert [r["paper_synthetic_added"] for r in rows] == list(SEED001_TABLE1)[:3]
    assert all(0.0 <= r["auc"] <= 1.0 for r in rows)
    assert rows[1]["n_train"] == report["real_train_used"] + report["increments"][1]
    assert "| 0 | 0 |" in (tmp_path / "study" / "increments.md").read_text()
    with pytest.raises(ValueError, match="exceeds the .* synthetic images.*nothing was trained"):
        run_increments_study(demo_images, tmp_path / "s" / "datalist.json", tmp_path / "s2", increments=[0, 500])
    with pytest.raises(FileNotFoundError, match="run the sampling config first"):
        run_increments_study(demo_images, tmp_path / "none.json", tmp_path / "s3")
