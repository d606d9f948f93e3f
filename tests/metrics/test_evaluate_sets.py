"""evaluate_sets: table values equal the individual metrics, files written, MS-SSIM n/a on small images, MLflow."""

from __future__ import annotations

import csv
import math

import mlflow
import numpy as np
import pytest
import torch

from monai_synth.evaluate import COLUMNS, evaluate_sets, load_image_set
from monai_synth.metrics import compute_fid, compute_kid, ms_ssim_between, mse_between, ssim_between


def _pool(images: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.adaptive_avg_pool2d(torch.as_tensor(images).float(), 3).flatten(1)


def _sets(size: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "Real train": torch.rand(20, 1, size, size, generator=g),
        "Real test": torch.rand(16, 1, size, size, generator=g),
        "OOD": (torch.rand(12, 1, size, size, generator=g) * 0.3 + 0.7),
    }


def test_evaluate_sets_rows_match_metrics(tmp_path):
    sets = _sets(28)
    pairs = [("Real train", "Real test"), ("Real train", "OOD")]
    table = evaluate_sets(
        sets,
        pairs,
        extractor=_pool,
        n_ssim_pairs=8,
        seed=1,
        kid_subset_size=10,
        kid_subsets=3,
        output_dir=tmp_path,
        log_mlflow=False,
    )
    assert [(r["Dataset A"], r["Dataset B"]) for r in table.rows] == pairs
    for r, (a, b) in zip(table.rows, pairs):
        xa, xb = sets[a], sets[b]
        assert r["N A"] == len(xa) and r["N B"] == len(xb)
        assert r["FID"] == pytest.approx(compute_fid(_pool(xa), _pool(xb)), rel=1e-9)
        assert r["KID mean"] == pytest.approx(compute_kid(_pool(xa), _pool(xb), 10, 3, 1).mean, rel=1e-9)
        assert r["SSIM"] == pytest.approx(ssim_between(xa, xb, 8, 1).mean, rel=1e-9)
        assert r["MS-SSIM"] == pytest.approx(ms_ssim_between(xa, xb, 8, 1).mean, rel=1e-9)
        assert r["MSE"] == pytest.approx(mse_between(xa, xb, 8, 1).mean, rel=1e-9)
    assert table.rows[1]["FID"] > table.rows[0]["FID"]  # the out-of-domain set is further away
    with open(table.csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == COLUMNS and float(rows[1]["FID"]) == pytest.approx(table.rows[1]["FID"])
    md = table.markdown_path.read_text()
    assert md.startswith("| Dataset A | Dataset B |") and md.count("\n") == 2 + len(pairs)


def test_evaluate_sets_small_images_skip_ms_ssim():
    table = evaluate_sets(
        _sets(8),
        [("Real train", "Real test")],
        extractor=_pool,
        n_ssim_pairs=4,
        kid_subset_size=5,
        kid_subsets=2,
        log_mlflow=False,
    )
    row = table.rows[0]
    assert math.isnan(row["MS-SSIM"]) and not math.isnan(row["SSIM"])
    assert "n/a" in table.to_markdown()


def test_evaluate_sets_unknown_set():
    with pytest.raises(ValueError, match="unknown set 'FMNIST'"):
        evaluate_sets(_sets(8), [("Real train", "FMNIST")], extractor=_pool)


def test_evaluate_sets_logs_mlflow(tmp_path):
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        with mlflow.start_run() as run:
            table = evaluate_sets(
                _sets(8),
                [("Real train", "Real test")],
                extractor=_pool,
                n_ssim_pairs=4,
                kid_subset_size=5,
                kid_subsets=2,
                output_dir=tmp_path / "eval",
            )
        data = mlflow.tracking.MlflowClient().get_run(run.info.run_id).data
        assert data.metrics["eval/Real_train_vs_Real_test/FID"] == pytest.approx(table.rows[0]["FID"])
        assert "eval/Real_train_vs_Real_test/MS-SSIM" not in data.metrics
        artifacts = [a.path for a in mlflow.tracking.MlflowClient().list_artifacts(run.info.run_id, "evaluation")]
        assert sorted(artifacts) == ["evaluation/evaluation.csv", "evaluation/evaluation.md"]
    finally:
        mlflow.set_tracking_uri(previous)


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".pt"])
def test_load_image_set_roundtrip(tmp_path, suffix):
    x = np.random.default_rng(0).integers(0, 255, (3, 1, 4, 4), dtype=np.uint8)
    path = tmp_path / f"set{suffix}"
    if suffix == ".npy":
        np.save(path, x)
    elif suffix == ".npz":
        np.savez(path, images=x)
    else:
        torch.save({"images": torch.from_numpy(x)}, path)
    np.testing.assert_array_equal(load_image_set(path).numpy(), x)


def test_load_image_set_errors(tmp_path):
    np.savez(tmp_path / "two.npz", a=np.zeros(2), b=np.zeros(2))
    with pytest.raises(ValueError, match="pass `key`"):
        load_image_set(tmp_path / "two.npz")
    with pytest.raises(ValueError, match="no entry 'c'"):
        load_image_set(tmp_path / "two.npz", key="c")
    with pytest.raises(ValueError, match="unsupported suffix"):
        load_image_set(tmp_path / "x.png")
