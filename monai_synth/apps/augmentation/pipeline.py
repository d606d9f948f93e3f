"""The augmentation study end to end: real data -> generator -> labelled synthetic set -> classifier study.

:func:`run_pipeline` is the main job (the ``augmentation_study`` bundle) and the engine of ``benchmarks/utility.py``:

1. :func:`~monai_synth.data.load_labelled_splits` reads the labelled data into memory at one resolution;
2. :func:`~monai_synth.apps.augmentation.generator.train_generator` trains the class-conditional
   ``DiffusionModelUNet`` with classifier-free guidance (Ho & Salimans 2022) under an epoch and wall-clock budget;
3. :func:`~monai_synth.apps.augmentation.synthesis.synthesize` samples a class-balanced labelled set;
4. :func:`~monai_synth.apps.augmentation.study.run_study` trains the classifier grid (real / synthetic /
   synthetic-pretrained + real fine-tuning), every run in MLflow, and writes the comparison; optionally FID.

The generator's training is an MLflow run of the same experiment (tag ``monai_synth.role = generator``): the recipe
as params, the loss every 10 iterations and img/s per epoch (MONAI's ``MLFlowHandler``), sample grids
``sample_grids/sample_grid_epochNNNNN.png`` at mid-training and at the end, drawn with the recipe's sampler as
synthesis draws (:class:`~monai_synth.handlers.SampleGridHandler`; also in ``generator/samples/``), and the final
loss and throughput.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai_synth.apps.augmentation.autoencoder import reconstruction_report
from monai_synth.apps.augmentation.generator import GENERATOR_DONE, GeneratorResult, load_generator, train_generator
from monai_synth.apps.augmentation.grids import increments_grid, reduced_grid, scaled_increments
from monai_synth.apps.augmentation.study import StudyData, run_study
from monai_synth.apps.augmentation.synthesis import synthesize
from monai_synth.apps.augmentation.tags import ROLE_TAG
from monai_synth.data.splits import load_labelled_splits
from monai_synth.engines.classification import ClassifierRunConfig, data_fingerprint
from monai_synth.engines.privacy import PRIVACY_REPORT, NearCopyFilter, near_copy_filter_for_splits
from monai_synth.engines.recipe import DiffusionRecipe
from monai_synth.handlers import mlflow_extras as mx
from monai_synth.handlers.sample_grid import SampleGridHandler
from monai_synth.metrics import INCEPTION_DIMS, InceptionFeatureExtractor, compute_fid
from monai_synth.utils.io import atomic_path, ensure_writable_dir

__all__ = ["AugmentationStudy", "paper_reference", "run_pipeline"]

logger = logging.getLogger(__name__)


def _stack(items: Sequence[Mapping[str, Any]]) -> torch.Tensor:
    return torch.stack([torch.as_tensor(np.asarray(it["image"]), dtype=torch.float32) for it in items])


def run_pipeline(
    output_dir: str | os.PathLike = "./outputs/augmentation_study",
    source: str = "demo",
    path: str | os.PathLike | None = None,
    recipe: DiffusionRecipe | Mapping[str, Any] | None = None,
    demo_kind: str = "cxr",
    demo_n_per_class: int = 150,
    n_synthetic_per_class: int = 100,
    grid: str | Sequence[Any] = "reduced",
    classifier: Mapping[str, Any] | None = None,
    classifier_epochs: int = 5,
    tracking_uri: str | None = None,
    experiment: str = "augmentation_study",
    fid: bool = False,
    fid_max_images: int = 1000,
    fid_dims: int | Sequence[int] = 2048,
    device: str = "cpu",
    progress: bool = True,
    reuse_generator: bool = True,
    labels_csv: str | os.PathLike | None = None,
    grid_rows: Sequence[int] | None = None,
    demo_split: Sequence[float] = (0.7, 0.15, 0.15),
    privacy_filter: bool = True,
    privacy_quantile: float = 0.99,
) -> dict[str, Any]:
    """Run the whole story: data -> generator -> synthetic set -> classifier study (MLflow) -> comparison.

    Args:
        output_dir: every output (checkpoints, synthetic PNGs, MLflow SQLite store, tables, summary JSON).
        source: a :class:`~monai_synth.utils.enums.DataSource` (see :func:`~monai_synth.data.load_labelled_splits`).
        path: the data file or folder.
        recipe: :class:`DiffusionRecipe` or a dict of its fields.
        demo_kind, demo_n_per_class: built-in demo data settings.
        demo_split: train / val / test proportions of the demo studies.
        n_synthetic_per_class: synthetic images per class.
        grid: ``"reduced"`` (:func:`~monai_synth.apps.augmentation.grids.reduced_grid`), ``"increments"`` (seed 001's
            increments scaled to the training split and the synthetic set,
            :func:`~monai_synth.apps.augmentation.grids.scaled_increments`), a preset of
            :func:`~monai_synth.apps.augmentation.grids.get_grid` (e.g. ``"table2"``) or a list of
            ``ClassifierRunConfig``.
        grid_rows: with ``grid="reduced"``, keep only these Table 2 rows.
        classifier: base classifier options (``ClassifierRunConfig`` fields), e.g. ``{"batch_size": 32}``.
        classifier_epochs: epochs per classifier stage.
        tracking_uri: MLflow URI (default ``sqlite:///<output_dir>/mlruns.db``).
        experiment: MLflow experiment name.
        fid: also compute FID (Inception features, extra ``[fid]``) of synthetic vs real test and real train vs test.
        fid_max_images: images per set for FID.
        fid_dims: Inception feature dimension(s) of the FID, any of 64, 192, 768, 2048 (pytorch-fid's taps). The
            summary's ``fid`` holds the first dimension's values and ``fid["by_dims"]`` every dimension's.
        device: torch device.
        progress: progress bars.
        reuse_generator: load a generator that finished training in ``output_dir/generator`` instead of training
            again (an unfinished one resumes from its latest checkpoint either way).
        labels_csv: label CSV for ``source="dicom"``.
        privacy_filter: check every synthetic candidate against the training images before it is written and drop
            near-copies (:func:`~monai_synth.engines.build_near_copy_filter`, threshold calibrated on the validation
            split at ``privacy_quantile``); ``False`` writes the set unchecked (its ``privacy_report.json`` says so).
        privacy_quantile: calibration quantile of the filter (docs/privacy.md).

    Returns:
        the summary dict also written to ``output_dir/summary.json``.
    """
    output_dir = ensure_writable_dir(Path(output_dir).resolve())
    if recipe is None or isinstance(recipe, Mapping):
        recipe = DiffusionRecipe(**dict(recipe or {}))
    t_start = time.perf_counter()
    splits = load_labelled_splits(
        source, path, image_size=recipe.image_size, work_dir=output_dir, demo_kind=demo_kind,
        demo_n_per_class=demo_n_per_class, seed=recipe.seed, labels_csv=labels_csv, demo_split=demo_split,
    )  # fmt: skip
    sizes = {k: len(v) for k, v in splits.items()}
    logger.info("data: %s", sizes)
    tracking = (mx.resolve_tracking_uri(tracking_uri, output_dir / "study"), experiment)
    gen = _generator(splits["train"], recipe, output_dir / "generator", reuse_generator, device, progress, tracking)
    logger.info("generator: %d epochs in %.1f s (%.1f img/s)", gen.epochs, gen.wall_s, gen.img_per_s)
    copies = _near_copy_filter(splits, source, path, privacy_quantile, privacy_filter)
    synthetic, sample_s = synthesize(
        gen, n_synthetic_per_class, output_dir / "synthetic", recipe, device=device, progress=progress,
        near_copy_filter=copies,
    )  # fmt: skip
    results = _classifier_study(
        splits, synthetic, gen, output_dir, grid, grid_rows, classifier, classifier_epochs, tracking_uri, experiment,
        device, progress, paper_reference(source, path),
    )  # fmt: skip
    summary: dict[str, Any] = {
        "data": {"source": source, "path": None if path is None else str(path), **sizes},
        "recipe": dataclasses.asdict(recipe),
        "generator": _generator_summary(gen, splits["test"]),
        "synthetic": {"n": len(synthetic), "sample_minutes": sample_s / 60.0, "dir": str(output_dir / "synthetic")},
        "privacy": _privacy_summary(output_dir / "synthetic" / PRIVACY_REPORT),
        "runs": [
            {"name": r.config.name, "tags": dict(r.config.tags), "run_id": r.run_id, **r.test_metrics} for r in results
        ],
    }
    if fid:
        summary["fid"] = _cached_fid(output_dir / "fid.json", splits, synthetic, fid_max_images, device, fid_dims)
    summary["total_minutes"] = (time.perf_counter() - t_start) / 60.0
    with atomic_path(output_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1, default=float))
    return summary


def _classifier_study(
    splits: Mapping[str, Sequence[Mapping[str, Any]]],
    synthetic: Sequence[Mapping[str, Any]],
    gen: GeneratorResult,
    output_dir: Path,
    grid: str | Sequence[Any],
    grid_rows: Sequence[int] | None,
    classifier: Mapping[str, Any] | None,
    classifier_epochs: int,
    tracking_uri: str | None,
    experiment: str,
    device: str,
    progress: bool,
    reference: str | None,
) -> list:
    """Step 4 of :func:`run_pipeline`: the classifier grid on real / synthetic data (MLflow) and its comparison."""
    base = {"epochs": classifier_epochs, **dict(classifier or {})}
    base.setdefault("synthetic_datalist", str(output_dir / "synthetic" / "datalist.json"))
    base.setdefault("synthetic_checkpoint", gen.checkpoint_dir)
    configs = _grid(grid, grid_rows, base)
    if configs == "increments":  # seed 001's +2500 ... +10000 scaled to the data at hand (scaled_increments)
        configs = increments_grid(ClassifierRunConfig(**base), scaled_increments(len(splits["train"]), len(synthetic)))
    return run_study(
        configs,
        StudyData(train=splits["train"], val=splits["val"], test=splits["test"], synthetic=synthetic),
        tracking_uri=tracking_uri,
        experiment=experiment,
        output_dir=output_dir / "study",
        base=ClassifierRunConfig(**base) if isinstance(configs, str) else None,
        device=device,
        progress=progress,
        reference=reference,
    )


def _near_copy_filter(
    splits: Mapping[str, Sequence[Mapping[str, Any]]],
    source: str,
    path: str | os.PathLike | None,
    quantile: float,
    enabled: bool,
) -> NearCopyFilter | None:
    """The filter of the main job (:func:`near_copy_filter_for_splits`), recorded as patient-disjoint where the
    split was made by patient (demo and DICOM studies; folders with a ``labels.csv``)."""
    by_patient = str(source) in ("demo", "dicom") or (
        str(source) == "folder" and path is not None and (Path(path) / "labels.csv").is_file()
    )
    return near_copy_filter_for_splits(splits, quantile, enabled, patient_disjoint=True if by_patient else None)


def _privacy_summary(report_path: Path) -> dict[str, Any]:
    """The summary's view of ``privacy_report.json``: checked or not, threshold, candidates and near-copies dropped."""
    report = json.loads(report_path.read_text())
    flagged = report.get("flagged")
    return {
        "report": str(report_path), "checked": report["checked"], "method": report["method"],
        "threshold": report["threshold"], "n_candidates": report["n_synthetic"],
        "n_dropped": None if flagged is None else len(flagged),
    }  # fmt: skip


def _grid(grid: str | Sequence[Any], rows: Sequence[int] | None, base: Mapping[str, Any]) -> Any:
    """``"reduced"`` -> :func:`reduced_grid` over ``base``; another preset name as is; a list of configs as a list."""
    if isinstance(grid, str):
        return reduced_grid(rows=rows, **base) if grid == "reduced" else grid
    return list(grid)


def paper_reference(source: str, path: str | os.PathLike | None) -> str | None:
    """``"seed000"`` (seed 000 Table 2 beside ours) only when the data is that paper's task, PneumoniaMNIST; on any
    other data (the built-in demo included) the comparison shows no paper columns."""
    return "seed000" if str(source) == "medmnist" and "pneumonia" in Path(str(path or "")).name.lower() else None


def _generator(
    train: Sequence[Mapping[str, Any]],
    recipe: DiffusionRecipe,
    out_dir: Path,
    reuse: bool,
    device: str,
    progress: bool,
    tracking: tuple[str, str] | None = None,
) -> GeneratorResult:
    """The generator finished in ``out_dir`` (``reuse``), else train (or resume) it there, as an MLflow run of
    ``tracking = (uri, experiment)`` when given: sample grids of the EMA model at half and all of ``recipe.epochs``,
    or when the time budget stops training, drawn as synthesis draws (the recipe's sampler, steps, guidance, eta)."""
    num_classes = max(int(it["label"]) for it in train) + 1
    if reuse and (out_dir / GENERATOR_DONE).is_file():
        logger.info("reusing the finished generator in %s", out_dir)
        return load_generator(out_dir, recipe, num_classes, device=device)
    if tracking is None:
        return train_generator(train, recipe, out_dir, num_classes=num_classes, device=device, progress=progress)
    client, run_id, handler, ae_handler = _generator_run(*tracking, recipe)
    grids = SampleGridHandler(
        None, recipe.sampling_scheduler(), out_dir / "samples", tuple(np.asarray(train[0]["image"]).shape),
        num_classes=num_classes, every_n_epochs=max(1, math.ceil(recipe.epochs / 2)),
        guidance_scale=recipe.guidance_scale, num_inference_steps=recipe.sample_steps, seed=recipe.seed,
        eta=recipe.sampler_eta, mlflow_client=client, mlflow_run_id=run_id,
    )  # fmt: skip
    status = "FAILED"
    try:
        gen = train_generator(
            train, recipe, out_dir, num_classes=num_classes, device=device, progress=progress,
            train_handlers=[handler, grids], autoencoder_handlers=[ae_handler],
        )  # fmt: skip
        final = {"final_loss": gen.final_loss, "img_per_s": gen.img_per_s, "train_minutes": gen.wall_s / 60.0}
        for key, value in final.items():
            if math.isfinite(value):
                client.log_metric(run_id, key, float(value))
        status = "FINISHED"
        return gen
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        mx.end_run(client, run_id, status)


def _every_10th(engine: Any, iteration: int) -> bool:
    """Ignite event filter: iterations 1, 11, 21, ... (one tracking write per 10 steps of the time budget)."""
    return iteration % 10 == 1


def _loss_of_dict(output: Mapping[str, Any]) -> Any:
    return output["loss"]


def _generator_run(uri: str, experiment: str, recipe: DiffusionRecipe) -> tuple[Any, str, Any, Any]:
    """A RUNNING generator run with the recipe as params, and MONAI ``MLFlowHandler``s writing into it: the diffusion
    loss (``train_loss``) and, for a latent generator, the autoencoder loss (``autoencoder_loss``) at iterations 1,
    11, 21, ..., img/s per epoch."""
    from monai.handlers import MLFlowHandler, from_engine

    mx.check_tracking_uri(uri)
    client = mx.make_client(uri)
    exp_id = mx.get_or_create_experiment(client, experiment)
    run_id = mx.create_run(
        client, exp_id, run_name="generator", tags={ROLE_TAG: "generator", "generator_kind": recipe.generator_kind}
    )
    mx.log_params(client, run_id, dataclasses.asdict(recipe))
    handlers = []
    # the diffusion trainer decollates its output (a list of dicts), the autoencoder trainer does not (one dict)
    for tag, loss in (("train_loss", from_engine(["loss"], first=True)), ("autoencoder_loss", _loss_of_dict)):
        h = MLFlowHandler(
            tracking_uri=uri, experiment_name=experiment, iteration_log=_every_10th, epoch_log=True, tag_name=tag,
            output_transform=loss, close_on_complete=False,
        )  # fmt: skip
        h.client, h.cur_run = client, client.get_run(run_id)
        handlers.append(h)
    return client, run_id, handlers[0], handlers[1]


def _generator_summary(gen: GeneratorResult, test: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What the summary records of the generator; for a latent one also its autoencoder and the reconstruction
    quality (PSNR / SSIM / MS-SSIM) on up to 500 test images."""
    out: dict[str, Any] = {
        "generator_kind": gen.generator_kind,
        "epochs": gen.epochs,
        "iterations": gen.iterations,
        "train_minutes": gen.wall_s / 60.0,
        "img_per_s": gen.img_per_s,
        "final_loss": gen.final_loss,
        "loss_history": gen.history.get("loss", []),
    }
    if gen.autoencoder is not None:
        out["autoencoder"] = {
            **gen.autoencoder_stats,
            "scale_factor": gen.scale_factor,
            "reconstruction_test": reconstruction_report(gen.autoencoder, list(test)[:500]),
        }
    return out


def _cached_fid(
    cache: Path,
    splits: Mapping[str, Sequence[Mapping[str, Any]]],
    synthetic: Sequence[Mapping[str, Any]],
    n: int,
    device: str,
    dims: int | Sequence[int] = 2048,
) -> dict[str, Any]:
    """:func:`_fid_summary` for each of ``dims`` (the first one's values at the top level, all under
    ``"by_dims"``), reused from ``cache`` when the same image sets, ``n`` and dimensions were measured before."""
    dims = [int(dims)] if isinstance(dims, int) else [int(d) for d in dims]
    if not dims or any(d not in INCEPTION_DIMS for d in dims):
        raise ValueError(f"`fid_dims` must be among {sorted(INCEPTION_DIMS)}, got {dims!r}.")
    key = {
        "n": int(n),
        "dims": dims,
        **{k: data_fingerprint(splits[k]) for k in ("train", "test")},
        "synthetic": data_fingerprint(synthetic),
    }
    if cache.is_file():
        try:
            stored = json.loads(cache.read_text())
        except (OSError, json.JSONDecodeError):
            stored = {}
        if stored.get("key") == key:
            logger.info("FID reused from %s", cache)
            return stored["fid"]
    by_dims = {str(d): _fid_summary(splits, synthetic, n, device, d) for d in dims}
    fid = {**by_dims[str(dims[0])], "dims": dims[0], "by_dims": by_dims}
    with atomic_path(cache) as tmp:
        tmp.write_text(json.dumps({"key": key, "fid": fid}, indent=1))
    return fid


def _fid_summary(
    splits: Mapping[str, Sequence[Mapping[str, Any]]],
    synthetic: Sequence[Mapping[str, Any]],
    n: int,
    device: str,
    dims: int = 2048,
) -> dict[str, float]:
    """FID (Inception ``dims``-d) of synthetic vs real test and of real train vs real test (seed 000 Table 1)."""
    extractor = InceptionFeatureExtractor(dims=dims, device=device)
    rng = np.random.default_rng(0)

    def feats(items):
        idx = rng.permutation(len(items))[:n]
        return extractor(_stack([items[i] for i in idx]))

    f_train, f_test, f_syn = feats(splits["train"]), feats(splits["test"]), feats(synthetic)
    fid_train_test = float(compute_fid(f_train, f_test))
    fid_synth_test = float(compute_fid(f_syn, f_test))
    return {
        "fid_train_test": fid_train_test,
        "fid_synth_test": fid_synth_test,
        "fid_synth_train": float(compute_fid(f_syn, f_train)),
        "fid_ratio": fid_synth_test / fid_train_test if fid_train_test > 0 else float("inf"),
        "n_per_set": int(min(n, len(splits["test"]), len(synthetic))),
    }


class AugmentationStudy:
    """The ``augmentation_study`` bundle's runnable: holds :func:`run_pipeline` arguments, ``run()`` executes them.

    After ``run()`` the comparison table (Markdown) is in :attr:`table`; with ``echo=True`` (the bundle's default,
    since this is the command-line entry point of the main job) it is also written to standard output.
    """

    def __init__(self, echo: bool = True, **kwargs: Any) -> None:
        self.echo = echo
        self.kwargs = kwargs
        self.summary: dict[str, Any] | None = None
        self.table: str = ""

    def run(self) -> dict[str, Any]:
        """Run the pipeline; return its summary."""
        self.summary = run_pipeline(**self.kwargs)
        out = Path(self.kwargs.get("output_dir", "./outputs/augmentation_study")).resolve()
        table_path = out / "study" / "comparison" / "comparison.md"
        self.table = table_path.read_text() if table_path.is_file() else ""
        gen, syn = self.summary["generator"], self.summary["synthetic"]
        header = (
            f"\nAugmentation study ({self.summary['data']}):\n"
            f"generator: {gen['epochs']} epochs in {gen['train_minutes']:.1f} min; "
            f"{syn['n']} synthetic images in {syn['sample_minutes']:.1f} min\n"
            f"outputs: {out}  (MLflow store: {out / 'study' / 'mlruns.db'})\n\n"
        )
        logger.info("%s%s", header, self.table)
        if self.echo:
            sys.stdout.write(header + self.table + "\n")
            sys.stdout.flush()
        return self.summary
