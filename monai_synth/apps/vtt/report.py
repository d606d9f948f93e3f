"""The study report: per reader and pooled statistics (:mod:`monai_synth.apps.vtt.stats`) as JSON, CSV and a chart,
and optionally an MLflow run holding them.

Files written to the output folder (each atomically):

* ``reader_study.json``: everything below plus the study settings;
* ``reader_study_readers.csv``: one row per reader and a ``(pooled)`` row: n, correct, accuracy, p-value, 95 % CI,
  TP / FN / TN / FP, sensitivity, specificity;
* ``reader_study_calibration.csv``: accuracy per reader (and pooled) at each confidence level;
* ``reader_study.png``: accuracy per reader with its 95 % CI against chance, and the calibration curves.

Agreement is measured on the items that every reader with at least one answer has answered: Cohen's kappa for two
readers, Fleiss' kappa for more. The pooled accuracy treats all answers as independent (they are not, when readers
share items); the per-reader tests are the primary result, as in a Visual Turing Test.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from monai_synth.apps.vtt.db import Answer, StudyDB
from monai_synth.apps.vtt.items import REAL, SYNTHETIC, TRUTHS
from monai_synth.apps.vtt.stats import cohen_kappa, fleiss_kappa, summarize
from monai_synth.handlers import mlflow_extras as mx
from monai_synth.utils.io import atomic_path, ensure_writable_dir

__all__ = [
    "CALIBRATION_CSV",
    "CHART_PNG",
    "POOLED",
    "READERS_CSV",
    "REPORT_JSON",
    "ReportFiles",
    "agreement",
    "build_report",
    "plot_report",
    "write_report",
]

logger = logging.getLogger(__name__)

REPORT_JSON = "reader_study.json"
READERS_CSV = "reader_study_readers.csv"
CALIBRATION_CSV = "reader_study_calibration.csv"
CHART_PNG = "reader_study.png"
POOLED = "(pooled)"  # a reader name cannot start with "(" (validation.parse_reader_name)
_READER_COLUMNS = ["reader", "n", "correct", "accuracy", "p_value", "ci_low", "ci_high", "tp", "fn", "tn", "fp",
                   "sensitivity", "specificity"]  # fmt: skip


class ReportFiles(NamedTuple):
    """What :func:`write_report` wrote, and the MLflow run id (``None`` without tracking)."""

    json: Path
    readers_csv: Path
    calibration_csv: Path
    chart: Path
    run_id: str | None


def agreement(answers: Sequence[Answer]) -> dict[str, Any]:
    """Inter-reader agreement on the items answered by every reader who answered at least one item.

    Returns:
        ``{"method": "cohen" | "fleiss" | None, "kappa", "n_items", "readers"}``; ``method`` is ``None`` with fewer
        than two readers.
    """
    by_reader: dict[str, dict[int, str]] = {}
    for a in answers:
        by_reader.setdefault(a.reader, {})[a.item_id] = a.answer
    readers = list(by_reader)
    common = sorted(set.intersection(*(set(d) for d in by_reader.values()))) if readers else []
    out: dict[str, Any] = {"method": None, "kappa": None, "n_items": len(common), "readers": readers}
    if len(readers) < 2:
        return {**out, "n_items": 0}
    if len(readers) == 2:
        first, second = (by_reader[r] for r in readers)
        return {**out, "method": "cohen", "kappa": cohen_kappa([first[i] for i in common], [second[i] for i in common])}
    table = [[sum(by_reader[r][i] == c for r in readers) for c in TRUTHS] for i in common]
    return {**out, "method": "fleiss", "kappa": fleiss_kappa(np.asarray(table).reshape(len(common), len(TRUTHS)))}


def _lesion_summary(answers: Sequence[Answer]) -> dict[str, Any] | None:
    asked = [a for a in answers if a.lesion is not None]
    if not asked:
        return None

    def count(rows: list[Answer]) -> dict[str, Any]:
        present = sum(a.lesion == 1 for a in rows)
        return {"n": len(rows), "present": present, "rate": present / len(rows) if rows else None}

    labels = sorted({a.label for a in asked if a.label is not None})
    return {
        "by_truth": {t: count([a for a in asked if a.truth == t]) for t in TRUTHS},
        "by_label": {lab: count([a for a in asked if a.label == lab]) for lab in labels},
    }


def _summary(answers: Sequence[Answer]) -> dict[str, Any]:
    out = summarize([a.truth for a in answers], [a.answer for a in answers], [a.confidence for a in answers])
    lesion = _lesion_summary(answers)
    return {**out, "lesion": lesion} if lesion else out


def build_report(db: StudyDB) -> dict[str, Any]:
    """The report of a study database (an empty study gives zero counts and ``None`` statistics, not an error)."""
    answers = db.answers()
    items = db.items()
    settings = db.settings()
    progress = {p.name: p for p in db.progress()}
    readers = []
    for name in dict.fromkeys(a.reader for a in answers):
        mine = [a for a in answers if a.reader == name]
        p = progress[name]
        readers.append({"reader": name, "complete": p.answered == p.total, **_summary(mine)})
    return {
        "study": {
            "n_items": len(items),
            "n_real": sum(it["truth"] == REAL for it in items),
            "n_synthetic": sum(it["truth"] == SYNTHETIC for it in items),
            "labels_known": bool(items) and all(it["label"] is not None for it in items),
            "ask_lesion": settings.get("ask_lesion") == "1",
            "seed": int(settings.get("seed", 0)),
            "created_at": settings.get("created_at"),
            "n_readers_started": len(progress),
        },
        "positive_class": SYNTHETIC,
        "chance": 0.5,
        "n_readers": len(readers),
        "n_answers": len(answers),
        "readers": readers,
        "pooled": {"reader": POOLED, **_summary(answers)},
        "agreement": agreement(answers),
    }


def _csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> Path:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: "" if r.get(k) is None else r[k] for k in columns})
    return path


def plot_report(report: dict[str, Any]) -> Any:
    """Accuracy per reader (and pooled) with 95 % CIs against chance, and accuracy per confidence level."""
    from matplotlib.figure import Figure

    rows = [*report["readers"], report["pooled"]] if report["n_answers"] else []
    fig = Figure(figsize=(10, 4))
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for ax in (ax1, ax2):
        ax.axhline(0.5, color="gray", ls="--", lw=1, label="chance")
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy")
    if not rows:
        for ax in (ax1, ax2):
            ax.text(0.5, 0.5, "no answers yet", ha="center", va="center", transform=ax.transAxes)
    else:
        acc = np.array([r["accuracy"] for r in rows], dtype=float)
        err = np.array([[a - r["ci_low"], r["ci_high"] - a] for a, r in zip(acc, rows)]).T
        colors = ["tab:blue"] * (len(rows) - 1) + ["tab:gray"]
        ax1.bar(range(len(rows)), acc, yerr=err, capsize=4, color=colors)
        ax1.set_xticks(range(len(rows)), [f"{r['reader']}\n(n={r['n']})" for r in rows], fontsize=8)
        for r in rows:
            levels = [c for c in r["calibration"] if c["n"]]
            style = (
                {"color": "tab:gray", "lw": 2.5, "marker": "o"} if r["reader"] == POOLED else {"lw": 1, "marker": "."}
            )
            ax2.plot([c["confidence"] for c in levels], [c["accuracy"] for c in levels], label=r["reader"], **style)
        ax2.legend(fontsize=7, loc="lower right")
    ax1.set_title("accuracy (95 % Clopper-Pearson CI)", fontsize=9)
    ax2.set_xticks([1, 2, 3, 4, 5])
    ax2.set_xlim(0.5, 5.5)
    ax2.set_xlabel("confidence (1 = guessing, 5 = certain)")
    ax2.set_title("calibration", fontsize=9)
    agree = report["agreement"]
    kappa = (
        f"{agree['method']} kappa = {agree['kappa']:.3f} on {agree['n_items']} items"
        if agree["kappa"] is not None
        else ""
    )
    fig.suptitle(
        f"Visual Turing Test: {report['n_readers']} reader(s), {report['n_answers']} answers. {kappa}", fontsize=10
    )
    fig.tight_layout()
    return fig


def _metric_key(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z_\-. /]", "_", text)


def _log_to_mlflow(tracking_uri: str, experiment: str, db_path: Path, report: dict[str, Any], files: list[Path]) -> str:
    """One FINISHED run with the settings as params, the headline numbers as metrics and the files as artifacts."""
    from mlflow.entities import Metric

    uri = mx.resolve_tracking_uri(tracking_uri)
    mx.check_tracking_uri(uri)
    client = mx.make_client(uri)
    run_id = mx.create_run(client, mx.get_or_create_experiment(client, experiment), run_name="reader_study",
                           tags={"monai_synth.role": "reader_study"})  # fmt: skip
    status = "FAILED"
    try:
        mx.log_params(client, run_id, {"db": str(db_path), **report["study"], "n_readers": report["n_readers"]})
        values = {"n_answers": report["n_answers"], "kappa": report["agreement"]["kappa"]}
        prefixes: set[str] = set()
        for r in [report["pooled"], *report["readers"]]:
            prefix = "pooled" if r["reader"] == POOLED else f"reader.{_metric_key(r['reader'])}"
            while prefix in prefixes:  # two names that differ only in characters MLflow keys cannot hold
                prefix += "_"
            prefixes.add(prefix)
            values.update({f"{prefix}.{k}": r[k] for k in ("accuracy", "p_value", "sensitivity", "specificity")})
        ts = int(time.time() * 1000)
        metrics = [Metric(k, float(v), ts, 0) for k, v in values.items() if v is not None]
        if metrics:
            client.log_batch(run_id, metrics=metrics)
        for f in files:
            client.log_artifact(run_id, str(f))
        status = "FINISHED"
    finally:
        mx.end_run(client, run_id, status)
    return run_id


def write_report(
    db_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    tracking_uri: str | None = None,
    experiment: str = "reader_study",
) -> ReportFiles:
    """Write the report files of a study database (see the module docstring) and, with ``tracking_uri``, log them.

    Args:
        db_path: the study database (read only).
        out_dir: folder for the files (created).
        tracking_uri: MLflow URI (``sqlite:///...`` or ``http(s)://...``); ``None``: no MLflow run.
        experiment: MLflow experiment name.

    Raises:
        FileNotFoundError: no database at ``db_path``.
        ValueError: the file is not a study database.
    """
    db_path = Path(db_path)
    report = build_report(StudyDB(db_path))
    out = ensure_writable_dir(out_dir)
    with atomic_path(out / REPORT_JSON) as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    rows = [*report["readers"], report["pooled"]]
    readers_csv = _csv(out / READERS_CSV, _READER_COLUMNS, rows)
    calib = [{"reader": r["reader"], **c} for r in rows for c in r["calibration"]]
    calibration_csv = _csv(out / CALIBRATION_CSV, ["reader", "confidence", "n", "correct", "accuracy"], calib)
    with atomic_path(out / CHART_PNG) as tmp:
        plot_report(report).savefig(tmp, format="png", dpi=110)
    files = [out / REPORT_JSON, readers_csv, calibration_csv, out / CHART_PNG]
    run_id = _log_to_mlflow(tracking_uri, experiment, db_path, report, files) if tracking_uri else None
    logger.info("reader-study report of %s written to %s", db_path, out)
    return ReportFiles(*files, run_id=run_id)
