"""ImageMetricsHandler: values equal direct FID/KID, real features cached, epoch schedule, MLflow logging, errors."""

from __future__ import annotations

import mlflow
import pytest
import torch
from ignite.engine import Engine, Events

from monai_synth.handlers import ImageMetricsHandler
from monai_synth.metrics import compute_fid, compute_kid

REAL = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(0))


class CountingExtractor:
    """Toy extractor (4x4 average pooling -> 16 features) that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return torch.nn.functional.avg_pool2d(torch.as_tensor(images).float(), 2).flatten(1)


def _sample_fn(n: int) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 0.8


def _run(handler: ImageMetricsHandler, max_epochs: int) -> tuple[Engine, list[int]]:
    engine = Engine(lambda e, b: None)
    seen: list[int] = []
    handler.attach(engine)

    @engine.on(Events.EPOCH_COMPLETED)
    def _record(e):
        if "fid" in e.state.metrics:
            seen.append(e.state.epoch)
            e.state.metrics.pop("fid")

    engine.run([0], max_epochs=max_epochs)
    return engine, seen


def test_handler_values_match_direct_computation():
    ext = CountingExtractor()
    h = ImageMetricsHandler(
        _sample_fn,
        ext,
        real_images=REAL,
        n_samples=20,
        every_n_epochs=1,
        kid_subset_size=10,
        kid_subsets=5,
        seed=3,
        log_mlflow=False,
    )
    values = h.compute()
    f_fake, f_real = ext(_sample_fn(20)), ext(REAL)
    assert values["fid"] == pytest.approx(compute_fid(f_fake, f_real), rel=1e-9)
    kid = compute_kid(f_fake, f_real, 10, 5, 3)
    assert values["kid_mean"] == pytest.approx(kid.mean, rel=1e-9)
    assert values["kid_std"] == pytest.approx(kid.std, rel=1e-9)


def test_handler_caches_real_features_and_follows_schedule():
    ext = CountingExtractor()
    h = ImageMetricsHandler(
        _sample_fn, ext, real_images=REAL, n_samples=10, every_n_epochs=2, metrics=("fid",), log_mlflow=False
    )
    engine, seen = _run(h, max_epochs=5)
    assert seen == [2, 4, 5]  # every 2 epochs and the last one
    assert ext.calls == 1 + len(seen)  # real features once, one pass per evaluation
    assert "kid_mean" not in engine.state.metrics


def test_handler_with_precomputed_features_and_prefix():
    ext = CountingExtractor()
    h = ImageMetricsHandler(
        _sample_fn,
        ext,
        real_features=ext(REAL),
        n_samples=10,
        every_n_epochs=1,
        metrics=("kid",),
        kid_subset_size=5,
        kid_subsets=2,
        prefix="val_",
        log_mlflow=False,
    )
    engine = Engine(lambda e, b: None)
    h.attach(engine)
    engine.run([0], max_epochs=1)
    assert set(engine.state.metrics) == {"val_kid_mean", "val_kid_std"}


@pytest.fixture
def mlflow_tmp(tmp_path):
    """MLflow tracking in a temporary sqlite store; the previous tracking URI is restored afterwards."""
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    yield mlflow
    mlflow.set_tracking_uri(previous)


def test_handler_logs_to_active_mlflow_run(mlflow_tmp):
    mlflow = mlflow_tmp
    h = ImageMetricsHandler(
        _sample_fn, CountingExtractor(), real_images=REAL, n_samples=10, every_n_epochs=1, metrics=("fid",)
    )
    with mlflow.start_run() as run:
        engine = Engine(lambda e, b: None)
        h.attach(engine)
        engine.run([0], max_epochs=2)
    history = mlflow.tracking.MlflowClient().get_metric_history(run.info.run_id, "fid")
    assert [m.step for m in history] == [1, 2]
    assert history[-1].value == pytest.approx(engine.state.metrics["fid"])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({}, "exactly one"),
        ({"real_images": REAL, "real_features": torch.zeros(4, 2)}, "exactly one"),
        ({"real_images": REAL, "metrics": ("is",)}, "metrics"),
        ({"real_images": REAL, "every_n_epochs": 0}, "every_n_epochs"),
        ({"real_images": REAL, "n_samples": 1}, "n_samples"),
    ],
    ids=["no_real", "both_real", "unknown_metric", "zero_period", "one_sample"],
)
def test_handler_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ImageMetricsHandler(_sample_fn, CountingExtractor(), **kwargs)
