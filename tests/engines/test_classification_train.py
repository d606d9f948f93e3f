"""train_classifier end to end on tiny data: MLflow contents, model selection, test metrics, tracking errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_items

from monai_synth.engines import classification as cls
from monai_synth.engines.classification import ClassifierRunConfig, train_classifier
from monai_synth.handlers.mlflow_extras import TrackingUnavailableError, make_client
from monai_synth.metrics.classification import classification_metrics
from monai_synth.networks import build_classifier

BASE = ClassifierRunConfig(network="resnet10", epochs=2, batch_size=8, lr=0.01, seed=0)


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cls")
    cfg = BASE.replace(
        synthetic_pretrain=True, pretrain_epochs=1, real_fraction=0.5, weighted_loss=True, geometric_aug=True,
        name="tiny", synthetic_datalist="/data/synth.json", synthetic_run_id="abc123",
    )  # fmt: skip
    data = dict(train_data=tiny_items(24, 1), val_data=tiny_items(16, 2), test_data=tiny_items(16, 3))
    res = train_classifier(cfg, **data, synthetic_data=tiny_items(16, 4), output_dir=out, experiment_name="t")
    return res, data, out


def test_result_and_history(tracked_run):
    res, _, _ = tracked_run
    assert res.history["stage"] == ["pretrain", "finetune", "finetune"]
    assert len(res.history["train_loss"]) == 3 and len(res.history["val_accuracy"]) == 3
    assert res.data_sizes["n_train_real"] == 12 and res.data_sizes["n_synthetic_pretrain"] == 16
    # model selection: best epoch of the last stage = first maximum of its val accuracy
    ft = res.history["val_accuracy"][1:]
    assert res.best_epoch == int(np.argmax(ft)) + 1 and res.best_val_metric == pytest.approx(max(ft))
    np.testing.assert_array_equal(res.confusion_matrix.sum(1), [8, 8])
    # lr follows StepLR: constant within the first 7 epochs
    assert res.history["lr"] == [0.01, 0.01, 0.01]


def test_saved_model_reproduces_test_metrics(tracked_run):
    res, data, _ = tracked_run
    net = build_classifier("resnet10", pretrained_path=res.model_path).eval()
    x = torch.stack([torch.as_tensor(d["image"]) for d in data["test_data"]])
    y = np.array([d["label"] for d in data["test_data"]])
    with torch.no_grad():
        probs = torch.softmax(net(x), 1).numpy()
    ref = classification_metrics(y, probs)
    for k, v in ref.items():
        assert res.test_metrics[k] == pytest.approx(v, abs=1e-6), k


def test_mlflow_contents(tracked_run):
    res, _, out = tracked_run
    client = make_client(f"sqlite:///{out}/mlruns.db")
    run = client.get_run(res.run_id)
    assert run.info.status == "FINISHED"
    p = run.data.params
    assert p["synthetic_datalist"].startswith("<local path ") and p["synthetic_run_id"] == "abc123"  # no local paths
    assert p["real_fraction"] == "0.5" and p["weighted_loss"] == "True" and p["n_train_real"] == "12"
    assert run.data.tags["monai_synth.config_hash"] == res.config_hash
    for k, v in res.test_metrics.items():
        assert run.data.metrics[f"test_{k}"] == pytest.approx(v)
    hist = client.get_metric_history(res.run_id, "val_accuracy")
    assert sorted(m.step for m in hist) == [1, 2, 3]  # epochs continue across stages
    np.testing.assert_allclose([m.value for m in sorted(hist, key=lambda m: m.step)], res.history["val_accuracy"])
    assert len(client.get_metric_history(res.run_id, "train_loss")) == 3
    arts = {a.path for a in client.list_artifacts(res.run_id, "figures")}
    assert arts == {"figures/confusion_matrix.png", "figures/roc.png", "figures/training_curves.png"}
    assert client.list_artifacts(res.run_id, "model") == []  # weights trained on patients stay local unless asked
    assert Path(res.model_path).stat().st_mode & 0o077 == 0  # and are owner-only on disk
    local = client.download_artifacts(res.run_id, "results.json", str(out))
    assert json.load(open(local))["confusion_matrix"] == res.confusion_matrix.tolist()


def test_weighted_loss_uses_finetune_set_proportions(monkeypatch, tmp_path):
    seen = []
    orig = torch.nn.CrossEntropyLoss

    def spy(*a, weight=None, **k):
        seen.append(None if weight is None else weight.tolist())
        return orig(*a, weight=weight, **k)

    monkeypatch.setattr(torch.nn, "CrossEntropyLoss", spy)
    train = tiny_items(16, 1)[:4] + [d for d in tiny_items(40, 5) if d["label"] == 1][:12]  # 2 neg, 14 pos
    cfg = BASE.replace(epochs=1, weighted_loss=True)
    train_classifier(cfg, train, tiny_items(8, 2), tiny_items(8, 3), output_dir=tmp_path, track=False)
    np.testing.assert_allclose(seen[0], [16 / (2 * 2), 16 / (2 * 14)])


def test_unreachable_uri_raises_before_training(monkeypatch, tmp_path):
    def boom(*a, **k):
        raise AssertionError("training must not start")

    monkeypatch.setattr(cls, "_train_stage", boom)
    with pytest.raises(TrackingUnavailableError, match="127.0.0.1:9"):
        train_classifier(BASE, tiny_items(8, 1), tiny_items(8, 2), tiny_items(8, 3), output_dir=tmp_path,
                         tracking_uri="http://127.0.0.1:9")  # fmt: skip


def test_unreachable_uri_warn_trains_without_tracking(tmp_path, caplog):
    cfg = BASE.replace(epochs=1, epoch_length=1)
    res = train_classifier(cfg, tiny_items(8, 1), tiny_items(8, 2), tiny_items(8, 3), output_dir=tmp_path,
                           tracking_uri="http://127.0.0.1:9", on_unreachable="warn")  # fmt: skip
    assert res.run_id is None and "WITHOUT tracking" in caplog.text
    assert len(res.history["train_loss"]) == 1


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"tracking_uri": "/tmp/mlruns"}, ValueError, "file store"),
        ({"on_unreachable": "ignore"}, ValueError, "on_unreachable"),
        ({"test_data": []}, ValueError, "test_data"),
        ({"val_data": [{"image": np.zeros((1, 4, 4)), "label": 5}]}, ValueError, "label"),
        ({"test_data": [{"image": "/no/such/x.png", "label": 0}]}, FileNotFoundError, "x.png"),
    ],
    ids=["file_store", "bad_policy", "empty_test", "label_range", "missing_file"],
)
def test_argument_errors(tmp_path, kwargs, exc, match):
    args = dict(train_data=tiny_items(8, 1), val_data=tiny_items(8, 2), test_data=tiny_items(8, 3))
    args.update({k: v for k, v in kwargs.items() if k in args})
    other = {k: v for k, v in kwargs.items() if k not in args}
    with pytest.raises(exc, match=match):
        train_classifier(BASE, **args, output_dir=tmp_path, **other)


def test_synthetic_required(tmp_path):
    with pytest.raises(ValueError, match="synthetic_data"):
        train_classifier(BASE.replace(synthetic_pretrain=True), tiny_items(8, 1), tiny_items(8, 2),
                         tiny_items(8, 3), output_dir=tmp_path, track=False)  # fmt: skip
