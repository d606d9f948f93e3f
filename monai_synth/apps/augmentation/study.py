"""Resumable grid studies of classifier runs under one MLflow experiment (parent run + nested child runs).

The grids (presets and builders) are in :mod:`monai_synth.apps.augmentation.grids`.

Resuming: each child run is identified by a deterministic *run key* (SHA-256 of the config identity and the data
fingerprints), stored as the tag ``monai_synth.run_key``. A study skips runs whose key already has a FINISHED run
in the same study; FAILED / KILLED runs are redone, and runs left RUNNING by a dead process are marked KILLED when
the study starts again (one writer per study is assumed).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from monai_synth.apps.augmentation.compare import compare_runs
from monai_synth.apps.augmentation.grids import get_grid
from monai_synth.apps.augmentation.tags import ROLE_TAG, RUN_KEY_TAG, STUDY_TAG
from monai_synth.engines import classification as _cls
from monai_synth.engines.classification import ClassifierRunConfig, RunResult, data_fingerprint
from monai_synth.handlers import mlflow_extras as mx
from monai_synth.utils.io import FolderLock

__all__ = ["StudyData", "result_from_mlflow", "run_key", "run_study"]

logger = logging.getLogger(__name__)

@dataclass
class StudyData:
    """The data of a study: real train/val/test lists and an optional synthetic list (items as in
    :func:`~monai_synth.engines.classification.train_classifier`)."""

    train: Sequence[Mapping[str, Any]]
    val: Sequence[Mapping[str, Any]]
    test: Sequence[Mapping[str, Any]]
    synthetic: Sequence[Mapping[str, Any]] | None = None

    def fingerprints(self) -> dict[str, str]:
        """:func:`data_fingerprint` of each split."""
        return {k: data_fingerprint(getattr(self, k)) for k in ("train", "val", "test", "synthetic")}


def run_key(config: ClassifierRunConfig, fingerprints: Mapping[str, str]) -> str:
    """Deterministic id of a run: SHA-256 (16 hex) of the config identity and the fingerprints of the data it uses."""
    used = {k: fingerprints.get(k, "") for k in ("train", "val", "test")}
    if config.uses_synthetic:
        used["synthetic"] = fingerprints.get("synthetic", "")
    blob = json.dumps({"config": config.identity(), "data": used}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def result_from_mlflow(client: Any, run: Any, config: ClassifierRunConfig) -> RunResult:
    """Rebuild a :class:`RunResult` of a FINISHED run from its ``results.json`` artifact (metrics as fallback)."""
    run_id = run.info.run_id
    metrics = run.data.metrics
    test = {k[len("test_") :]: float(v) for k, v in metrics.items() if k.startswith("test_") and "_cm_" not in k}
    res = RunResult(config=config, config_hash=config.config_hash(), test_metrics=test, run_id=run_id, skipped=True)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = client.download_artifacts(run_id, "results.json", tmp)
            data = json.loads(Path(path).read_text())
        res.best_val_metric = float(data.get("best_val", float("nan")))
        res.best_epoch = int(data.get("best_epoch", -1))
        res.history = data.get("history", {})
        res.data_sizes = data.get("data_sizes", {})
        res.confusion_matrix = np.asarray(data["confusion_matrix"], dtype=np.int64)
    except Exception as e:  # artifact store unavailable: metrics are enough for the comparison
        logger.warning("could not read results.json of run %s (%s); using logged metrics only.", run_id, e)
    return res


def _get_parent_run(client: Any, exp_id: str, study: str, params: Mapping[str, Any]) -> str:
    runs = mx.find_runs(client, exp_id, {STUDY_TAG: study, ROLE_TAG: "parent"})
    if runs:
        run_id = runs[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        logger.info("resuming study %r in parent run %s", study, run_id)
    else:
        run_id = mx.create_run(client, exp_id, run_name=study, tags={STUDY_TAG: study, ROLE_TAG: "parent"})
    mx.log_params(client, run_id, params)
    return run_id


def _mark_stale_runs(client: Any, exp_id: str, study: str) -> None:
    """Runs left RUNNING by a process that died are not finished: mark them KILLED so they are redone."""
    for r in mx.find_runs(client, exp_id, {STUDY_TAG: study, ROLE_TAG: "child"}, statuses=("RUNNING",)):
        logger.warning("marking stale RUNNING run %s (%s) as KILLED", r.info.run_id, r.info.run_name)
        mx.end_run(client, r.info.run_id, "KILLED")


def _train_child(
    config: ClassifierRunConfig,
    key: str,
    data: StudyData,
    study: str,
    output_dir: str | os.PathLike,
    uri: str,
    experiment: str,
    parent: str,
    device: str | None,
) -> RunResult:
    """Train one grid entry as a nested child run of ``parent``, tagged with the study and its run key."""
    return _cls.train_classifier(
        config,
        data.train,
        data.val,
        data.test,
        synthetic_data=data.synthetic,
        output_dir=output_dir,
        tracking_uri=uri,
        experiment_name=experiment,
        parent_run_id=parent,
        run_tags={STUDY_TAG: study, ROLE_TAG: "child", RUN_KEY_TAG: key},
        extra_params={"study": study, "run_key": key},
        device=device,
    )


def _check_synthetic_enough(configs: Sequence[ClassifierRunConfig], data: StudyData) -> None:
    """Refuse a grid before its first run when an arm needs more synthetic images than there are."""
    n = len(data.synthetic or [])
    short = [c for c in configs if c.uses_synthetic and (n == 0 or c.synthetic_added > n)]
    if short:
        worst = max(short, key=lambda c: c.synthetic_added)
        raise ValueError(
            f"run {worst.name or worst.config_hash()!r} needs {max(worst.synthetic_added, 1)} synthetic images but the "
            f"study has {n}: synthesize more (e.g. n_synthetic_per_class), or use smaller increments "
            "(monai_synth.apps.augmentation.scaled_increments); nothing was trained."
        )


def run_study(
    grid: str | Sequence[ClassifierRunConfig],
    data: StudyData | Mapping[str, Any],
    tracking_uri: str | None = None,
    experiment: str = "augmentation_study",
    output_dir: str | os.PathLike = "./augmentation_study",
    study_name: str | None = None,
    base: ClassifierRunConfig | Mapping[str, Any] | None = None,
    resume: bool = True,
    continue_on_error: bool = False,
    compare: bool = True,
    reference: str | None = None,
    device: str | None = None,
    progress: bool = True,
) -> list[RunResult]:
    """Run every config of ``grid`` as a nested child run of one parent run, skipping finished ones.

    Args:
        grid: a preset name of :func:`~monai_synth.apps.augmentation.grids.get_grid` or a list of configs.
        data: :class:`StudyData` or a dict with keys train/val/test[/synthetic].
        tracking_uri: MLflow URI; default ``sqlite:///<output_dir>/mlruns.db`` (``$MLFLOW_TRACKING_URI`` is not read).
            Checked up front: an unreachable URI raises :class:`~monai_synth.handlers.TrackingUnavailableError`.
        experiment: MLflow experiment name.
        output_dir: local outputs (state dicts, figures, default store, comparison).
        study_name: parent run name and tag (default: the preset name or ``"study"``).
        base: base options for a preset (a config or a dict of options).
        resume: skip runs whose run key has a FINISHED run in this study.
        continue_on_error: log a failed run (it is marked FAILED) and go on, instead of stopping the study.
        compare: write the comparison table and figures at the end and log them to the parent run
            (:func:`~monai_synth.apps.augmentation.compare.compare_runs`).
        reference: ``"seed000"`` to put seed 000 Table 2 values beside ours in the comparison.
        device: torch device for training.
        progress: show a tqdm progress bar.

    Returns:
        one :class:`RunResult` per finished grid entry, in grid order (``skipped=True`` for reused runs; runs that
        failed under ``continue_on_error`` are left out).
    """
    from tqdm.auto import tqdm

    configs = get_grid(grid, base)
    if isinstance(data, Mapping):
        data = StudyData(**data)
    _check_synthetic_enough(configs, data)
    study = study_name or (grid if isinstance(grid, str) else "study")
    prints = data.fingerprints()
    keys = [run_key(c, prints) for c in configs]
    if len(set(keys)) != len(keys):
        raise ValueError("`grid` holds duplicate runs (identical options); make each config differ (e.g. `seed`).")
    uri = mx.resolve_tracking_uri(tracking_uri, output_dir)
    mx.check_tracking_uri(uri)
    # one study process per output folder: a second one would mark the first one's RUNNING runs KILLED
    with FolderLock(output_dir, f"run_study {study}"):
        client = mx.make_client(uri)
        exp_id = mx.get_or_create_experiment(client, experiment)
        parent = _get_parent_run(
            client,
            exp_id,
            study,
            {"study": study, "n_runs": len(configs), **{f"data_fingerprint.{k}": v for k, v in prints.items()}},
        )
        _mark_stale_runs(client, exp_id, study)
        results: list[RunResult] = []
        status = "FAILED"
        try:
            bar = tqdm(list(zip(configs, keys)), desc=study, disable=not progress)
            for config, key in bar:
                bar.set_postfix_str(config.name or key)
                if resume:
                    done = mx.find_runs(client, exp_id, {STUDY_TAG: study, RUN_KEY_TAG: key}, statuses=("FINISHED",))
                    if done:
                        logger.info("skipping finished run %s (%s)", config.name, done[0].info.run_id)
                        results.append(result_from_mlflow(client, done[0], config))
                        continue
                try:
                    res = _train_child(config, key, data, study, output_dir, uri, experiment, parent, device)
                except Exception:
                    if not continue_on_error:
                        raise
                    logger.exception("run %s failed (marked FAILED); continuing", config.name)
                    continue
                res.config_hash = key
                results.append(res)
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            mx.end_run(client, parent, status)
        if compare:
            compare_runs(
                experiment,
                uri,
                study=study,
                out_dir=Path(output_dir) / "comparison",
                reference=reference,
                run_ids=[r.run_id for r in results if r.run_id],
            )
        return results
