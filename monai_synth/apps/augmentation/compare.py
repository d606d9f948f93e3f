"""Side-by-side comparison of a classifier study read back from MLflow (seed 000 Table 2 layout).

CLI::

    python -m monai_synth.apps.augmentation.compare --experiment augmentation_study \
        [--tracking-uri sqlite:///out/mlruns.db] [--study seed000_table2] [--out out/comparison] [--reference seed000]

writes ``comparison.csv``, ``comparison.md``, ``comparison.png`` (accuracy and AUC per arm, with 95 % CIs when the
table has ``<metric> CI low`` / ``<metric> CI high`` columns) and ``comparison_bars.png`` (every metric) and logs them
to the study's parent run.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monai_synth.apps.augmentation.tags import ROLE_TAG, RUN_KEY_TAG, STUDY_TAG, TABLE2_ROW_TAG
from monai_synth.handlers import mlflow_extras as mx
from monai_synth.metrics.classification import accuracy_ci, auc_ci
from monai_synth.utils.io import atomic_path, ensure_writable_dir

__all__ = ["SEED000_TABLE2", "TABLE_COLUMNS", "METRIC_COLUMNS", "ComparisonTable", "compare_runs", "plot_comparison",
           "plot_arms", "main"]  # fmt: skip

logger = logging.getLogger(__name__)

# Table column -> logged test metric (see monai_synth.metrics.classification; P, R, F1 are macro averages, which is
# what seed 000 Table 2 reports: e.g. row 17 R = (0.682 + 0.808) / 2 = 0.745).
METRIC_COLUMNS = {
    "Acc": "test_accuracy",
    "Acc(N)": "test_accuracy_class_0",
    "Acc(P)": "test_accuracy_class_1",
    "P": "test_precision_macro",
    "R": "test_recall_macro",
    "F1": "test_f1_macro",
    "AUC": "test_auc",
}
TABLE_COLUMNS = ["#", "Geo aug?", "Synthetic PT?", "Real data FT%", "Weighted loss?", *METRIC_COLUMNS]
# 95 % confidence intervals: accuracy exact (Clopper-Pearson), AUC normal with the Hanley & McNeil (1982) SE
CI_COLUMNS = ["Acc CI low", "Acc CI high", "AUC CI low", "AUC CI high"]

# Seed 000 ("Medical Image Synthesis for Data Augmentation and Anonymization via Diffusion", Sec. 4.3, Table 2):
# row -> (Acc, Acc(N), Acc(P), P, R, F1) on the held-out PneumoniaMNIST test set; AUC was not reported.
SEED000_TABLE2: dict[int, tuple[float, float, float, float, float, float]] = {
    1: (0.811, 0.538, 0.974, 0.853, 0.753, 0.773),
    2: (0.829, 0.590, 0.972, 0.862, 0.781, 0.798),
    3: (0.811, 0.526, 0.982, 0.861, 0.754, 0.771),
    4: (0.829, 0.585, 0.974, 0.864, 0.780, 0.798),
    5: (0.827, 0.650, 0.933, 0.835, 0.791, 0.804),
    6: (0.833, 0.585, 0.982, 0.875, 0.784, 0.803),
    7: (0.845, 0.667, 0.951, 0.859, 0.809, 0.824),
    8: (0.824, 0.705, 0.895, 0.818, 0.800, 0.807),
    9: (0.779, 0.573, 0.903, 0.779, 0.738, 0.748),
    10: (0.772, 0.530, 0.918, 0.780, 0.724, 0.735),
    11: (0.800, 0.581, 0.931, 0.811, 0.756, 0.769),
    12: (0.748, 0.449, 0.928, 0.763, 0.688, 0.697),
    13: (0.812, 0.581, 0.951, 0.834, 0.766, 0.782),
    14: (0.792, 0.603, 0.905, 0.792, 0.754, 0.764),
    15: (0.804, 0.538, 0.964, 0.838, 0.751, 0.767),
    16: (0.809, 0.628, 0.918, 0.813, 0.773, 0.785),
    17: (0.729, 0.682, 0.808, 0.730, 0.745, 0.725),
    18: (0.662, 0.628, 0.718, 0.662, 0.673, 0.657),
}
_REF_COLUMNS = ("Acc", "Acc(N)", "Acc(P)", "P", "R", "F1")
REFERENCES = {"seed000": SEED000_TABLE2}


def _yes(v: Any) -> str:
    return "✓" if str(v).lower() in ("true", "1") else "x"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.3f}"
    return str(v)


@dataclass
class ComparisonTable:
    """Rows of the comparison (one per finished run), with the seed reference columns when asked.

    Attributes:
        columns: column names in order.
        rows: one dict per run (column -> value; metric values are floats, NaN when missing).
        run_ids: the MLflow run id of each row.
        reference: the reference name (e.g. ``"seed000"``) or None.
    """

    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)
    reference: str | None = None

    def to_markdown(self) -> str:
        """GitHub-flavoured Markdown table (metrics with 3 decimals; 95 % CIs as ``[low, high]`` columns)."""
        shown = [c for c in self.columns if c not in CI_COLUMNS]
        for metric in ("AUC", "Acc"):
            if f"{metric} CI low" in self.columns and metric in shown:
                shown.insert(shown.index(metric) + 1, f"{metric} 95% CI")

        def cell(r: dict[str, Any], c: str) -> str:
            if c.endswith(" 95% CI"):
                lo, hi = r.get(c.replace("95% CI", "CI low")), r.get(c.replace("95% CI", "CI high"))
                return "" if lo is None or math.isnan(lo) else f"[{lo:.3f}, {hi:.3f}]"
            return _fmt(r.get(c, ""))

        lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
        lines += ["| " + " | ".join(cell(r, c) for c in shown) + " |" for r in self.rows]
        if any(f"{m} CI low" in self.columns for m in ("Acc", "AUC")):
            lines.append("")
            lines.append("95% CI: accuracy exact (Clopper-Pearson); AUC normal, Hanley & McNeil (1982) SE.")
        if self.reference == "seed000":
            lines.append("")
            lines.append("`[seed000]` columns: seed 000 Table 2 (Sec. 4.3), same row number; AUC not reported there.")
        return "\n".join(lines) + "\n"

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write the table as CSV (full precision)."""
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.columns + ["run_id"])
            w.writeheader()
            for r, rid in zip(self.rows, self.run_ids):
                w.writerow({**{c: r.get(c, "") for c in self.columns}, "run_id": rid})
        return Path(path)

    def to_dataframe(self) -> Any:
        """A pandas DataFrame (pandas comes with mlflow)."""
        import pandas as pd

        return pd.DataFrame(self.rows, columns=self.columns).assign(run_id=self.run_ids)

    def __str__(self) -> str:
        return self.to_markdown()


def _row_number(run: Any, index: int) -> Any:
    tag = run.data.tags.get("table2_row")
    return int(tag) if tag and tag.isdigit() else index + 1


def _sort_key(run: Any) -> tuple:
    tag = run.data.tags.get("table2_row", "")
    return (0, int(tag), "") if tag.isdigit() else (1, 0, run.info.run_name or "")


def compare_runs(
    experiment: str,
    tracking_uri: str | None = None,
    study: str | None = None,
    out_dir: str | os.PathLike | None = None,
    reference: str | None = None,
    log_to_parent: bool = True,
    run_ids: Sequence[str] | None = None,
) -> ComparisonTable:
    """Read the FINISHED child runs of an experiment (optionally of one study) and tabulate their test metrics.

    Columns: ``#, Geo aug?, Synthetic PT?, Real data FT%, Weighted loss?, Acc, Acc(N), Acc(P), P, R, F1, AUC`` (+
    ``Synthetic added`` when any run added synthetic images; + ``<metric> [seed000]`` reference columns when
    ``reference="seed000"``, matched on the ``table2_row`` tag). When a run key was finished more than once the
    newest run is used.

    Args:
        experiment: MLflow experiment name.
        tracking_uri: MLflow URI (required: ``$MLFLOW_TRACKING_URI`` is not read, see
            :func:`monai_synth.handlers.resolve_tracking_uri`).
        study: only runs tagged with this study name.
        out_dir: when given, write ``comparison.csv``, ``comparison.md``, ``comparison.png`` and
            ``comparison_bars.png`` there.
        reference: None or ``"seed000"``.
        log_to_parent: log the written files to the study's parent run (needs ``out_dir`` and ``study``).
        run_ids: only these runs (e.g. the runs of one :func:`~monai_synth.apps.augmentation.study.run_study` call,
            so runs finished earlier on other data, such as a previous synthetic set, are left out).

    Raises:
        ValueError: unknown experiment or reference, or no finished runs.
    """
    if reference is not None and reference not in REFERENCES:
        raise ValueError(f"`reference` must be None or one of {sorted(REFERENCES)}, got {reference!r}.")
    if not tracking_uri:
        raise ValueError("Give `tracking_uri` (e.g. sqlite:///<output_dir>/mlruns.db); $MLFLOW_TRACKING_URI is unused.")
    uri = mx.resolve_tracking_uri(tracking_uri)
    client = mx.make_client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ValueError(f"MLflow experiment {experiment!r} not found at {uri!r}.")
    tags = {ROLE_TAG: "child"}
    if study:
        tags[STUDY_TAG] = study
    runs = mx.find_runs(client, exp.experiment_id, tags, statuses=("FINISHED",))  # newest first
    if run_ids is not None:
        wanted = set(run_ids)
        runs = [r for r in runs if r.info.run_id in wanted]
    seen, kept = set(), []
    for r in runs:
        key = r.data.tags.get(RUN_KEY_TAG, r.info.run_id)
        if key not in seen:
            seen.add(key)
            kept.append(r)
    if not kept:
        raise ValueError(
            f"No FINISHED runs in experiment {experiment!r}" + (f" for study {study!r}." if study else ".")
        )
    kept.sort(key=_sort_key)
    with_added = any(int(float(r.data.params.get("synthetic_added", 0) or 0)) > 0 for r in kept)
    columns = list(TABLE_COLUMNS) + list(CI_COLUMNS)
    if with_added:
        columns.insert(5, "Synthetic added")
    if reference:
        columns += [f"{c} [{reference}]" for c in _REF_COLUMNS]
    table = ComparisonTable(columns=columns, reference=reference)
    ref = REFERENCES.get(reference or "", {})
    for i, r in enumerate(kept):
        table.rows.append(_table_row(r, i, with_added, reference, ref))
        table.run_ids.append(r.info.run_id)
    if out_dir is not None:
        files = _write_comparison(table, ensure_writable_dir(out_dir))
        if log_to_parent and study:
            parents = mx.find_runs(client, exp.experiment_id, {STUDY_TAG: study, ROLE_TAG: "parent"})
            if parents:
                for f in files:
                    client.log_artifact(parents[0].info.run_id, str(f), "comparison")
            else:
                logger.warning("no parent run for study %r; comparison not logged to MLflow.", study)
    return table


def _table_row(run: Any, index: int, with_added: bool, reference: str | None, ref: dict) -> dict[str, Any]:
    """One table row from a FINISHED run's params, metrics and tags."""
    p, m = run.data.params, run.data.metrics
    row: dict[str, Any] = {
        "#": _row_number(run, index),
        "Geo aug?": _yes(p.get("geometric_aug")),
        "Synthetic PT?": _yes(p.get("synthetic_pretrain")),
        "Real data FT%": round(100 * float(p.get("real_fraction", "nan")), 1),
        "Weighted loss?": _yes(p.get("weighted_loss")),
    }
    if with_added:
        row["Synthetic added"] = int(float(p.get("synthetic_added", 0) or 0))
    for col, key in METRIC_COLUMNS.items():
        row[col] = float(m.get(key, float("nan")))
    row.update(_confidence_intervals(m, row["Acc"], row["AUC"]))
    if reference:
        values = ref.get(row["#"]) if run.data.tags.get(TABLE2_ROW_TAG) else None
        for j, c in enumerate(_REF_COLUMNS):
            row[f"{c} [{reference}]"] = values[j] if values else float("nan")
    return row


def _confidence_intervals(metrics: dict[str, float], acc: float, auc: float) -> dict[str, float]:
    """95 % CIs of the test accuracy (exact, Clopper-Pearson) and of a binary AUC (Hanley & McNeil 1982) from the
    logged confusion matrix ``test_cm_<true><pred>``; NaN when it is missing."""
    k = int(round(math.sqrt(sum(1 for name in metrics if name.startswith("test_cm_")))))
    out = dict.fromkeys(CI_COLUMNS, float("nan"))
    if k < 2:
        return out
    cm = [[int(metrics.get(f"test_cm_{i}{j}", 0)) for j in range(k)] for i in range(k)]
    n = sum(map(sum, cm))
    if n < 1 or math.isnan(acc):
        return out
    out["Acc CI low"], out["Acc CI high"] = accuracy_ci(sum(cm[i][i] for i in range(k)), n)
    if k == 2 and min(sum(cm[0]), sum(cm[1])) > 0 and not math.isnan(auc):
        out["AUC CI low"], out["AUC CI high"] = auc_ci(auc, sum(cm[1]), sum(cm[0]))
    return out


def _write_comparison(table: ComparisonTable, out: Path) -> list[Path]:
    """``comparison.csv``, ``comparison.md``, ``comparison.png`` and ``comparison_bars.png`` in ``out``; returns their
    paths."""
    files = [table.to_csv(out / "comparison.csv")]
    with atomic_path(out / "comparison.md") as tmp:
        tmp.write_text(table.to_markdown())
    files.append(out / "comparison.md")
    for name, fig in (("comparison.png", plot_arms(table)), ("comparison_bars.png", plot_comparison(table))):
        with atomic_path(out / name) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
        files.append(out / name)
    logger.info("comparison written to %s", out)
    return files


def plot_arms(table: ComparisonTable, metrics: Sequence[str] = ("Acc", "AUC")) -> Any:
    """The chart of the arms: one panel per metric (accuracy and AUC), one bar per arm (#), with the 95 % CI as error
    bars when the table has ``<metric> CI low`` and ``<metric> CI high`` columns, and the reference value as a marker
    when present."""
    import numpy as np
    from matplotlib.figure import Figure

    n = len(table.rows)
    x = np.arange(n)
    fig = Figure(figsize=(max(5.0, 0.5 * n + 2.5), 2.6 * len(metrics)))
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(len(metrics), 1, i + 1)
        values = np.array([float(r.get(metric, float("nan"))) for r in table.rows])
        yerr = None
        lo_col, hi_col = f"{metric} CI low", f"{metric} CI high"
        if lo_col in table.columns and hi_col in table.columns:
            lo = np.array([float(r.get(lo_col, float("nan"))) for r in table.rows])
            hi = np.array([float(r.get(hi_col, float("nan"))) for r in table.rows])
            yerr = np.nan_to_num(np.vstack([values - lo, hi - values]), nan=0.0).clip(min=0.0)
        ax.bar(x, values, 0.6, yerr=yerr, capsize=4 if yerr is not None else 0, color="tab:blue", label="ours")
        ref_col = f"{metric} [{table.reference}]" if table.reference else None
        if ref_col and ref_col in table.columns:
            ref = [r.get(ref_col, float("nan")) for r in table.rows]
            ax.plot(x, ref, "D", color="tab:orange", label=table.reference)
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.set_ylabel(metric + (" (95 % CI)" if yerr is not None else ""))
        ax.set_ylim(0, 1)
        ax.set_xticks(x, [str(r["#"]) for r in table.rows])
        ax.grid(axis="y", alpha=0.3)
    fig.axes[0].set_title("test accuracy and AUC by arm (#)", fontsize=10)
    fig.axes[-1].set_xlabel("arm (#: seed 000 Table 2 row when tagged)")
    fig.tight_layout()
    return fig


def plot_comparison(table: ComparisonTable, metrics: Sequence[str] = tuple(METRIC_COLUMNS)) -> Any:
    """One bar panel per metric, one bar per arm; the reference value (hatched) beside ours when present."""
    import numpy as np
    from matplotlib.figure import Figure

    n = len(table.rows)
    labels = [str(r["#"]) for r in table.rows]
    fig = Figure(figsize=(max(6.0, 0.45 * n + 2), 2.2 * len(metrics)))
    x = np.arange(n)
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(len(metrics), 1, i + 1)
        ours = [r.get(metric, float("nan")) for r in table.rows]
        ref_col = f"{metric} [{table.reference}]" if table.reference else None
        has_ref = ref_col in table.columns if ref_col else False
        width = 0.4 if has_ref else 0.7
        ax.bar(x - (width / 2 if has_ref else 0), ours, width, label="ours", color="tab:blue")
        if has_ref:
            ax.bar(x + width / 2, [r.get(ref_col, float("nan")) for r in table.rows], width, label=table.reference,
                   color="tab:orange", hatch="//", alpha=0.8)  # fmt: skip
        ax.set_ylabel(metric)
        ax.set_ylim(0, 1)
        ax.set_xticks(x, labels if i == len(metrics) - 1 else [""] * n)
        ax.grid(axis="y", alpha=0.3)
        if i == 0:
            ax.legend(fontsize=8, loc="lower right")
            ax.set_title("test metrics by arm (#)", fontsize=10)
    fig.axes[-1].set_xlabel("arm (#: seed 000 Table 2 row when tagged)")
    fig.tight_layout()
    return fig


def main(argv: Sequence[str] | None = None) -> ComparisonTable:
    """CLI: ``python -m monai_synth.apps.augmentation.compare --experiment NAME ...``; prints the Markdown table."""
    ap = argparse.ArgumentParser(
        prog="python -m monai_synth.apps.augmentation.compare", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--experiment", required=True, help="MLflow experiment name")
    ap.add_argument("--tracking-uri", default=None, help="MLflow URI (default $MLFLOW_TRACKING_URI)")
    ap.add_argument("--study", default=None, help="only runs of this study (tag monai_synth.study)")
    ap.add_argument("--out", default=None, help="folder for comparison.csv/.md/.png/_bars.png")
    ap.add_argument("--reference", default=None, choices=sorted(REFERENCES), help="put published values beside ours")
    ap.add_argument("--no-log", action="store_true", help="do not log the files to the parent run")
    args = ap.parse_args(argv)
    table = compare_runs(args.experiment, args.tracking_uri, study=args.study, out_dir=args.out,
                         reference=args.reference, log_to_parent=not args.no_log)  # fmt: skip
    print(table.to_markdown())  # CLI output
    return table


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
