"""Statistics of a Visual Turing Test: accuracy with an exact binomial test, sensitivity / specificity, agreement.

Positive = synthetic: a reader who calls a synthetic image synthetic scores a true positive. Chance is 50 % because
every study set is half real and half synthetic; readers who cannot tell the images apart score near 50 % (seed 001:
three radiologists, about 46 %).

* Accuracy ``k / n`` with the exact two-sided binomial test of ``H0: p = 0.5`` and the Clopper-Pearson 95 % interval
  (:func:`scipy.stats.binomtest`).
* Sensitivity ``TP / (TP + FN)`` (synthetic images spotted), specificity ``TN / (TN + FP)`` (real images accepted).
* Cohen's kappa for two readers (Cohen 1960): ``kappa = (p_o - p_e) / (1 - p_e)``, ``p_o`` the observed agreement,
  ``p_e = sum_c p_1(c) p_2(c)`` the agreement expected from each reader's own answer rates.
* Fleiss' kappa for ``m >= 2`` readers (Fleiss 1971): for ``N`` items, ``n_ic`` readers putting item ``i`` in category
  ``c``, ``P_i = (sum_c n_ic^2 - m) / (m (m - 1))``, ``P_bar = mean_i P_i``, ``p_c = sum_i n_ic / (N m)``,
  ``P_e = sum_c p_c^2``, ``kappa = (P_bar - P_e) / (1 - P_e)``.
* Calibration: accuracy at each confidence level 1-5.

An undefined value (no answers; ``p_e = 1`` because every answer is the same) is ``None``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import binomtest

from monai_synth.apps.vtt.items import REAL, SYNTHETIC, TRUTHS
from monai_synth.apps.vtt.validation import CONFIDENCE_LEVELS

__all__ = ["accuracy_test", "calibration", "cohen_kappa", "fleiss_kappa", "sensitivity_specificity", "summarize"]


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def accuracy_test(correct: int, n: int, confidence_level: float = 0.95) -> dict[str, Any]:
    """Accuracy, exact two-sided binomial p-value against 50 % and the Clopper-Pearson interval.

    Returns:
        ``{"n", "correct", "accuracy", "p_value", "ci_low", "ci_high"}`` (``None`` values when ``n == 0``).
    """
    if not 0 <= correct <= n:
        raise ValueError(f"`correct` must be in [0, n={n}], got {correct}.")
    out: dict[str, Any] = {"n": int(n), "correct": int(correct), "accuracy": _ratio(correct, n)}
    if n == 0:
        return {**out, "p_value": None, "ci_low": None, "ci_high": None}
    res = binomtest(int(correct), int(n), 0.5, alternative="two-sided")
    ci = res.proportion_ci(confidence_level=confidence_level, method="exact")
    return {**out, "p_value": float(res.pvalue), "ci_low": float(ci.low), "ci_high": float(ci.high)}


def sensitivity_specificity(truths: Sequence[str], answers: Sequence[str]) -> dict[str, Any]:
    """Counts and rates for spotting synthetic images (positive = :data:`SYNTHETIC`).

    Returns:
        ``{"tp", "fn", "tn", "fp", "sensitivity", "specificity"}``.
    """
    pairs = list(zip(truths, answers, strict=True))
    tp = sum(t == SYNTHETIC and a == SYNTHETIC for t, a in pairs)
    fn = sum(t == SYNTHETIC and a == REAL for t, a in pairs)
    tn = sum(t == REAL and a == REAL for t, a in pairs)
    fp = sum(t == REAL and a == SYNTHETIC for t, a in pairs)
    return {
        "tp": tp,
        "fn": fn,
        "tn": tn,
        "fp": fp,
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
    }


def calibration(truths: Sequence[str], answers: Sequence[str], confidences: Sequence[int]) -> list[dict[str, Any]]:
    """Accuracy at each confidence level: ``[{"confidence", "n", "correct", "accuracy"}]`` for levels 1-5."""
    rows = list(zip(truths, answers, confidences, strict=True))
    out = []
    for level in CONFIDENCE_LEVELS:
        hits = [t == a for t, a, c in rows if int(c) == level]
        out.append(
            {"confidence": level, "n": len(hits), "correct": sum(hits), "accuracy": _ratio(sum(hits), len(hits))}
        )
    return out


def cohen_kappa(first: Sequence[str], second: Sequence[str]) -> float | None:
    """Cohen's kappa (Cohen 1960) of two readers' answers on the same items (see the module docstring).

    Returns:
        kappa, or ``None`` without items or when ``p_e = 1`` (both readers gave one and the same answer throughout).
    """
    a, b = list(first), list(second)
    if len(a) != len(b):
        raise ValueError(f"the two readers must answer the same items, got {len(a)} and {len(b)} answers.")
    if not a:
        return None
    cats = sorted(set(a) | set(b))
    n = len(a)
    p_o = sum(x == y for x, y in zip(a, b)) / n
    p_e = sum((a.count(c) / n) * (b.count(c) / n) for c in cats)
    return None if p_e >= 1.0 else (p_o - p_e) / (1.0 - p_e)


def fleiss_kappa(counts: np.ndarray | Sequence[Sequence[int]]) -> float | None:
    """Fleiss' kappa (Fleiss 1971) from an ``(N items, K categories)`` table of how many readers chose each category.

    Raises:
        ValueError: not 2-D, negative counts, or rows with different totals or fewer than 2 readers.

    Returns:
        kappa, or ``None`` without items or when ``P_e = 1``.
    """
    table = np.asarray(counts, dtype=np.float64)
    if table.ndim != 2:
        raise ValueError(f"`counts` must be a 2-D (items, categories) table, got shape {table.shape}.")
    if table.shape[0] == 0:
        return None
    m = table.sum(axis=1)
    if (table < 0).any() or not np.all(m == m[0]) or m[0] < 2:
        raise ValueError("every item needs the same number (>= 2) of readers and non-negative counts in `counts`.")
    m0 = m[0]
    p_i = ((table**2).sum(axis=1) - m0) / (m0 * (m0 - 1.0))
    p_bar = float(p_i.mean())
    p_c = table.sum(axis=0) / (table.shape[0] * m0)
    p_e = float((p_c**2).sum())
    return None if p_e >= 1.0 else (p_bar - p_e) / (1.0 - p_e)


def summarize(truths: Sequence[str], answers: Sequence[str], confidences: Sequence[int]) -> dict[str, Any]:
    """Accuracy test, sensitivity / specificity and calibration of one reader's (or the pooled) answers."""
    truths, answers, confidences = list(truths), list(answers), [int(c) for c in confidences]
    bad = sorted({x for x in truths + answers if x not in TRUTHS})
    if bad:
        raise ValueError(f"truths and answers must be in {list(TRUTHS)}, got {bad}.")
    correct = sum(t == a for t, a in zip(truths, answers, strict=True))
    return {
        **accuracy_test(correct, len(truths)),
        **sensitivity_specificity(truths, answers),
        "calibration": calibration(truths, answers, confidences),
    }
