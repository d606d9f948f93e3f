"""Classification metrics as pure numpy functions (no Ignite, no scikit-learn).

The metric set follows seed 000 (Table 2: Acc, Acc(N), Acc(P), P, R, F1) and seed 001 (Table 1: AUC, F1).
Seed 000 defines P = TP/(TP+FP), R = TP/(TP+FN), F1 = 2PR/(P+R); its reported P, R and F1 agree with the
*macro* averages over the two classes (e.g. Table 2 row 17: R = (Acc(N) + Acc(P)) / 2 = (0.682 + 0.808) / 2 =
0.745), so :func:`classification_metrics` reports both the macro averages (``*_macro``, used for Table 2) and
the positive-class values (``*_pos``, the usual clinical reading, e.g. seed 001's cancer-detection F1).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch

__all__ = [
    "PrecisionRecallF1",
    "to_numpy_1d",
    "confusion_matrix",
    "accuracy",
    "per_class_accuracy",
    "precision_recall_f1",
    "roc_auc",
    "roc_curve_points",
    "accuracy_ci",
    "auc_ci",
    "rank_with_ties",
    "classification_metrics",
    "METRIC_NAMES",
]

METRIC_NAMES = (
    "accuracy",
    "accuracy_class_0",
    "accuracy_class_1",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "precision_pos",
    "recall_pos",
    "f1_pos",
    "auc",
)
"""Keys of :func:`classification_metrics` for a binary task (the ``accuracy_class_k`` keys grow with K)."""


class PrecisionRecallF1(NamedTuple):
    """Precision, recall and F1 score."""

    precision: float
    recall: float
    f1: float


def to_numpy_1d(x: Any, name: str = "input", dtype: Any = None) -> np.ndarray:
    """Convert a sequence / numpy array / tensor to a 1-D numpy array.

    Raises:
        ValueError: when ``x`` is not one-dimensional after squeezing a trailing singleton axis.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=dtype)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must be one-dimensional (N,), got shape {arr.shape}.")
    return arr


def _labels(y: Any, name: str) -> np.ndarray:
    arr = to_numpy_1d(y, name)
    if arr.size and (not np.all(np.equal(np.mod(arr, 1), 0)) or arr.min() < 0):
        raise ValueError(f"`{name}` must hold non-negative integer class indices, got values like {arr[:5]!r}.")
    return arr.astype(np.int64)


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int | None = None) -> np.ndarray:
    """Confusion matrix ``C[i, j]`` = number of samples of true class ``i`` predicted as class ``j``.

    For a binary task with 1 = positive: ``C = [[TN, FP], [FN, TP]]``.

    Args:
        y_true: true class indices, shape (N,).
        y_pred: predicted class indices, shape (N,).
        num_classes: K; default ``max(y_true, y_pred) + 1`` (at least 2).

    Returns:
        int64 array of shape (K, K).
    """
    t, p = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"`y_true` and `y_pred` must have the same length, got {t.shape[0]} and {p.shape[0]}.")
    k = num_classes if num_classes is not None else max(2, int(max(t.max(initial=0), p.max(initial=0))) + 1)
    if t.size and max(t.max(), p.max()) >= k:
        raise ValueError(f"class indices must be < num_classes={k}, got max {max(t.max(), p.max())}.")
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k).astype(np.int64)


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Fraction of correct predictions; NaN for empty input."""
    t, p = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    return float(np.mean(t == p)) if t.size else float("nan")


def per_class_accuracy(y_true: Any, y_pred: Any, num_classes: int | None = None) -> np.ndarray:
    """Accuracy within each true class, ``C[k, k] / sum_j C[k, j]`` (= recall of class k).

    Seed 000 Table 2 calls these Acc(N) (class 0, no pneumonia) and Acc(P) (class 1, pneumonia).
    Classes absent from ``y_true`` get NaN.
    """
    cm = confusion_matrix(y_true, y_pred, num_classes)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


def _safe_div(a: float, b: float) -> float:
    return float(a / b) if b > 0 else 0.0


def precision_recall_f1(
    y_true: Any, y_pred: Any, average: str = "macro", pos_label: int = 1, num_classes: int | None = None
) -> PrecisionRecallF1:
    """Precision TP/(TP+FP), recall TP/(TP+FN) and F1 = 2PR/(P+R) (seed 000, Table 2 legend).

    Args:
        y_true: true class indices (N,).
        y_pred: predicted class indices (N,).
        average: ``"macro"`` (unweighted mean of the per-class values; F1 is the mean of per-class F1s)
            or ``"binary"`` (the values of class ``pos_label``).
        pos_label: positive class for ``average="binary"``.
        num_classes: K, see :func:`confusion_matrix`.

    Returns:
        :class:`PrecisionRecallF1`. A zero denominator gives 0 for that class (the usual convention).
    """
    if average not in ("macro", "binary"):
        raise ValueError(f"`average` must be one of ['binary', 'macro'], got {average!r}.")
    cm = confusion_matrix(y_true, y_pred, num_classes).astype(np.float64)
    k = cm.shape[0]
    if not 0 <= pos_label < k:
        raise ValueError(f"`pos_label` must be in [0, {k - 1}], got {pos_label}.")
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    prec = np.array([_safe_div(tp[c], tp[c] + fp[c]) for c in range(k)])
    rec = np.array([_safe_div(tp[c], tp[c] + fn[c]) for c in range(k)])
    f1 = np.array([_safe_div(2 * prec[c] * rec[c], prec[c] + rec[c]) for c in range(k)])
    if average == "binary":
        return PrecisionRecallF1(float(prec[pos_label]), float(rec[pos_label]), float(f1[pos_label]))
    return PrecisionRecallF1(float(prec.mean()), float(rec.mean()), float(f1.mean()))


def rank_with_ties(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x`` with ties given their average (mid) rank."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    ranks = np.empty(x.size, dtype=np.float64)
    # boundaries of runs of equal values
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], x.size]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + 1 + e) / 2.0  # mean of ranks s+1 .. e
    return ranks


def _binary_auc(pos: np.ndarray, scores: np.ndarray) -> float:
    n1 = int(pos.sum())
    n0 = pos.size - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rank_with_ties(scores)
    # Mann-Whitney: U = R_1 - n1 (n1 + 1) / 2 ; AUC = U / (n1 n0), ties count 1/2
    u = r[pos].sum() - n1 * (n1 + 1) / 2.0
    return float(u / (n1 * n0))


def roc_auc(y_true: Any, scores: Any, pos_label: int = 1) -> float:
    """Area under the ROC curve by the Mann-Whitney rank formulation, ties counted 1/2.

    ``AUC = (R_1 - n_1 (n_1 + 1) / 2) / (n_1 n_0)`` with ``R_1`` the sum of the mid-ranks of the positive
    samples' scores (Hanley & McNeil 1982). Equals P(score_pos > score_neg) + P(equal) / 2.

    Args:
        y_true: true class indices (N,).
        scores: (N,) score of the positive class, or (N, K) class probabilities/logits. With K = 2 the column
            ``pos_label`` is used; with K > 2 the macro average of one-vs-rest AUCs is returned.
        pos_label: the positive class for 1-D scores or K = 2.

    Returns:
        the AUC, NaN when a needed class is absent from ``y_true``.
    """
    t = _labels(y_true, "y_true")
    s = scores.detach().cpu().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores, dtype=np.float64)
    if s.ndim == 2 and s.shape[1] == 1:
        s = s[:, 0]
    if s.shape[0] != t.shape[0]:
        raise ValueError(f"`scores` must have {t.shape[0]} rows like `y_true`, got shape {s.shape}.")
    if s.ndim == 1:
        return _binary_auc(t == pos_label, s)
    if s.ndim != 2:
        raise ValueError(f"`scores` must have shape (N,) or (N, K), got {s.shape}.")
    if s.shape[1] == 2:
        return _binary_auc(t == pos_label, s[:, pos_label])
    aucs = [_binary_auc(t == c, s[:, c]) for c in range(s.shape[1])]
    return float(np.nanmean(aucs)) if not all(np.isnan(aucs)) else float("nan")


def roc_curve_points(positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC curve ``(fpr, tpr)`` from (0, 0) to (1, 1), one point per distinct score (ties move diagonally).

    ``tpr(s) = #{positives with score >= s} / P``, ``fpr(s) = #{negatives with score >= s} / N``; the trapezoidal
    area under it equals the Mann-Whitney AUC of :func:`roc_auc`.

    Raises:
        ValueError: ``positive`` holds no positive or no negative sample.
    """
    pos = np.asarray(positive, dtype=bool).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"a ROC curve needs positive and negative samples, got {n_pos} and {n_neg}.")
    order = np.argsort(-s, kind="mergesort")
    s, pos = s[order], pos[order]
    last_of_score = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tps, fps = np.cumsum(pos)[last_of_score], np.cumsum(~pos)[last_of_score]
    return np.r_[0.0, fps / n_neg], np.r_[0.0, tps / n_pos]


def classification_metrics(
    y_true: Any, probs: Any, num_classes: int | None = None, pos_label: int = 1
) -> dict[str, float]:
    """All Table 2 / Table 1 metrics from true labels and class probabilities.

    Predictions are ``argmax(probs)``. Keys: ``accuracy``, ``accuracy_class_<k>`` (Acc(N) = class 0,
    Acc(P) = class 1 for seed 000), ``precision_macro``, ``recall_macro``, ``f1_macro`` (Table 2 P, R, F1),
    ``precision_pos``, ``recall_pos``, ``f1_pos`` (class ``pos_label``), ``auc`` (see :func:`roc_auc`).

    Args:
        y_true: true class indices (N,).
        probs: (N, K) class probabilities (or logits: only the argmax and the ranking are used).
        num_classes: K; default ``probs.shape[1]``.
        pos_label: positive class.

    Returns:
        dict of floats.
    """
    p = probs.detach().cpu().numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"`probs` must have shape (N, K), got {p.shape}.")
    k = num_classes or p.shape[1]
    pred = p.argmax(axis=1)
    out: dict[str, float] = {"accuracy": accuracy(y_true, pred)}
    for c, a in enumerate(per_class_accuracy(y_true, pred, k)):
        out[f"accuracy_class_{c}"] = float(a)
    macro = precision_recall_f1(y_true, pred, "macro", num_classes=k)
    pos = precision_recall_f1(y_true, pred, "binary", pos_label=pos_label, num_classes=k)
    out.update(precision_macro=macro.precision, recall_macro=macro.recall, f1_macro=macro.f1)
    out.update(precision_pos=pos.precision, recall_pos=pos.recall, f1_pos=pos.f1)
    out["auc"] = roc_auc(y_true, p, pos_label=pos_label)
    return out


def accuracy_ci(correct: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) confidence interval of an accuracy ``correct / n`` (Clopper & Pearson 1934).

    Raises:
        ValueError: ``n < 1`` or ``correct`` outside ``[0, n]``.
    """
    from scipy.stats import binomtest

    if n < 1 or not 0 <= correct <= n:
        raise ValueError(f"accuracy_ci needs 0 <= correct <= n and n >= 1, got correct={correct}, n={n}.")
    ci = binomtest(int(correct), int(n)).proportion_ci(confidence_level=level, method="exact")
    return float(ci.low), float(ci.high)


def auc_ci(auc: float, n_pos: int, n_neg: int, level: float = 0.95) -> tuple[float, float]:
    """Normal-approximation confidence interval of an AUC with the Hanley & McNeil (1982, Eq. 2) standard error.

    ``SE^2 = (A(1-A) + (n_1 - 1)(Q_1 - A^2) + (n_0 - 1)(Q_2 - A^2)) / (n_1 n_0)``, ``Q_1 = A / (2 - A)``,
    ``Q_2 = 2A^2 / (1 + A)``; the interval is clipped to [0, 1].

    Raises:
        ValueError: ``n_pos`` or ``n_neg`` below 1.
    """
    from scipy.stats import norm

    if n_pos < 1 or n_neg < 1:
        raise ValueError(f"auc_ci needs positives and negatives, got n_pos={n_pos}, n_neg={n_neg}.")
    a = float(auc)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)
    half = float(norm.ppf(0.5 + level / 2)) * max(var, 0.0) ** 0.5
    return max(0.0, a - half), min(1.0, a + half)
