"""Report statistics against independent references: hand computation, textbook tables, scipy called directly."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from monai_synth.apps.vtt import accuracy_test, calibration, cohen_kappa, fleiss_kappa, sensitivity_specificity

R, S = "real", "synthetic"


def exact_two_sided(k: int, n: int) -> float:
    """Exact two-sided binomial p at p = 0.5 by hand: the sum of P(X = i) over every i at most as likely as k."""
    probs = [math.comb(n, i) / 2**n for i in range(n + 1)]
    return min(1.0, sum(p for p in probs if p <= probs[k] * (1 + 1e-12)))


@pytest.mark.parametrize("k, n", [(9, 10), (14, 30), (15, 30), (0, 5), (46, 100), (3, 3)], ids=str)
def test_binomial_test_against_hand_and_scipy(k, n):
    res = accuracy_test(k, n)
    assert res["accuracy"] == pytest.approx(k / n)
    assert res["p_value"] == pytest.approx(exact_two_sided(k, n), rel=1e-9)
    assert res["p_value"] == pytest.approx(binomtest(k, n, 0.5).pvalue, rel=1e-12)
    if (k, n) == (9, 10):
        assert res["p_value"] == pytest.approx(22 / 1024)  # 2 (C(10,9) + C(10,10)) / 2^10


def test_clopper_pearson_limits_in_closed_form():
    # k = 0: [0, 1 - (alpha/2)^(1/n)]; k = n: [(alpha/2)^(1/n), 1]
    none, all_ = accuracy_test(0, 10), accuracy_test(10, 10)
    assert none["ci_low"] == 0.0 and none["ci_high"] == pytest.approx(1 - 0.025 ** (1 / 10))
    assert all_["ci_high"] == 1.0 and all_["ci_low"] == pytest.approx(0.025 ** (1 / 10))
    empty = accuracy_test(0, 0)
    assert empty == {"n": 0, "correct": 0, "accuracy": None, "p_value": None, "ci_low": None, "ci_high": None}
    with pytest.raises(ValueError, match="correct"):
        accuracy_test(4, 3)


def test_sensitivity_specificity_positive_is_synthetic():
    truths = [S, S, S, R, R, R, R]
    answers = [S, R, S, R, S, R, R]
    out = sensitivity_specificity(truths, answers)
    assert (out["tp"], out["fn"], out["tn"], out["fp"]) == (2, 1, 3, 1)
    assert out["sensitivity"] == pytest.approx(2 / 3) and out["specificity"] == pytest.approx(3 / 4)
    assert sensitivity_specificity([R], [R])["sensitivity"] is None  # no synthetic image: undefined


def test_calibration_per_confidence_level():
    rows = calibration([S, S, R, R, R], [S, R, R, R, S], [5, 5, 1, 3, 3])
    assert [(r["confidence"], r["n"], r["correct"]) for r in rows] == [(1, 1, 1), (2, 0, 0), (3, 2, 1), (4, 0, 0),
                                                                       (5, 2, 1)]  # fmt: skip
    assert rows[1]["accuracy"] is None and rows[2]["accuracy"] == 0.5


# Cohen's kappa, the worked example of Wikipedia "Cohen's kappa": 50 items, yes/yes 20, yes/no 5, no/yes 10, no/no 15:
# p_o = 0.7, p_e = 0.5 * 0.6 + 0.5 * 0.4 = 0.5, kappa = 0.4.
YES_NO = ["yes"] * 20 + ["yes"] * 5 + ["no"] * 10 + ["no"] * 15, ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15


def test_cohen_kappa_textbook_example():
    assert cohen_kappa(*YES_NO) == pytest.approx(0.4)
    assert cohen_kappa([S, R, S, R], [S, R, S, R]) == pytest.approx(1.0)
    assert cohen_kappa([S, S, R, R], [R, R, S, S]) == pytest.approx(-1.0)
    assert cohen_kappa([S, S], [S, S]) is None and cohen_kappa([], []) is None  # p_e = 1 / no items
    with pytest.raises(ValueError, match="same items"):
        cohen_kappa([S], [S, R])


# Fleiss' kappa, the worked example of Wikipedia "Fleiss' kappa" (10 subjects, 14 raters, 5 categories):
# P_bar = 0.378, P_e = 0.213, kappa = 0.210.
FLEISS_TABLE = [
    [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
]  # fmt: skip


def test_fleiss_kappa_textbook_example():
    assert fleiss_kappa(FLEISS_TABLE) == pytest.approx(0.2099, abs=5e-4)
    # two raters: Fleiss' kappa is Scott's pi; on the Cohen example p_o = 0.7, P_e = 0.55^2 + 0.45^2 = 0.505
    two = np.array([[2 * (a == b == "yes"), 2 * (a == b == "no")] if a == b else [1, 1] for a, b in zip(*YES_NO)])
    assert fleiss_kappa(two) == pytest.approx((0.7 - 0.505) / (1 - 0.505))
    assert fleiss_kappa([[3, 0], [3, 0]]) is None  # everyone, always the same category: P_e = 1
    assert fleiss_kappa(np.zeros((0, 2))) is None
    for bad in ([[1, 2], [2, 2]], [[1, 0]], [1, 2], [[-1, 3]]):
        with pytest.raises(ValueError):
            fleiss_kappa(bad)
