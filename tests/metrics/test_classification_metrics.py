"""Classification metrics vs hand computations on fixed predictions (no scikit-learn)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from monai_synth.metrics.classification import (
    accuracy,
    classification_metrics,
    confusion_matrix,
    per_class_accuracy,
    precision_recall_f1,
    rank_with_ties,
    roc_auc,
)

# 4 negatives, 6 positives; TN=2, FP=2, FN=1, TP=5
Y_TRUE = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
Y_PRED = [0, 1, 1, 0, 1, 1, 0, 1, 1, 1]


@pytest.mark.parametrize("kind", ["list", "numpy", "tensor", "column"])
def test_confusion_matrix_input_types(kind):
    conv = {
        "list": lambda a: a,
        "numpy": np.asarray,
        "tensor": torch.as_tensor,
        "column": lambda a: np.asarray(a)[:, None],
    }[kind]
    np.testing.assert_array_equal(confusion_matrix(conv(Y_TRUE), conv(Y_PRED)), [[2, 2], [1, 5]])


def test_accuracy_and_per_class():
    assert accuracy(Y_TRUE, Y_PRED) == pytest.approx(7 / 10)
    np.testing.assert_allclose(per_class_accuracy(Y_TRUE, Y_PRED), [1 / 2, 5 / 6])


@pytest.mark.parametrize(
    "average,expected",
    [
        # positive class: P = 5/7, R = 5/6, F1 = 2PR/(P+R) = 10/13
        ("binary", (5 / 7, 5 / 6, 10 / 13)),
        # negative class: P = 2/3, R = 1/2, F1 = 4/7 ; macro = means
        ("macro", ((5 / 7 + 2 / 3) / 2, (5 / 6 + 1 / 2) / 2, (10 / 13 + 4 / 7) / 2)),
    ],
    ids=["binary", "macro"],
)
def test_precision_recall_f1(average, expected):
    np.testing.assert_allclose(tuple(precision_recall_f1(Y_TRUE, Y_PRED, average)), expected)


def test_zero_division_convention():
    # never predicts positive: P_pos = 0/0 -> 0, F1_pos = 0
    prf = precision_recall_f1([0, 1, 1], [0, 0, 0], "binary")
    assert tuple(prf) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize(
    "y,s,expected",
    [
        # pos scores 0.9 0.8 0.4 0.4 vs neg 0.4 0.3 0.1: 3 + 3 + 2.5 + 2.5 = 11 of 12 pairs
        ([1, 1, 1, 1, 0, 0, 0], [0.9, 0.8, 0.4, 0.4, 0.4, 0.3, 0.1], 11 / 12),
        ([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], 1.0),
        ([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4], 0.0),
        ([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5], 0.5),
        ([0, 1, 1], [0.2, 0.1, 0.3], 0.5),
    ],
    ids=["ties", "perfect", "inverted", "all_tied", "half"],
)
def test_roc_auc_hand(y, s, expected):
    assert roc_auc(y, s) == pytest.approx(expected)


def test_roc_auc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    s = rng.integers(0, 6, 60) / 5.0  # many ties
    pos, neg = s[y == 1], s[y == 0]
    pairs = [(1.0 if a > b else 0.5 if a == b else 0.0) for a, b in itertools.product(pos, neg)]
    assert roc_auc(y, s) == pytest.approx(np.mean(pairs))
    # (N, 2) probabilities use column 1
    assert roc_auc(y, np.stack([1 - s, s], 1)) == pytest.approx(np.mean(pairs))


def test_roc_auc_single_class_is_nan_and_multiclass_ovr():
    assert np.isnan(roc_auc([1, 1, 1], [0.1, 0.2, 0.3]))
    probs = np.eye(3)[[0, 1, 2, 0, 1, 2]] * 0.8 + 0.1
    assert roc_auc([0, 1, 2, 0, 1, 2], probs) == pytest.approx(1.0)


def test_rank_with_ties():
    np.testing.assert_allclose(rank_with_ties(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1.0, 3.5, 2.0])


def test_classification_metrics_dict():
    probs = np.zeros((10, 2))
    probs[np.arange(10), Y_PRED] = 0.9
    probs[np.arange(10), 1 - np.asarray(Y_PRED)] = 0.1
    m = classification_metrics(Y_TRUE, torch.as_tensor(probs))
    assert m["accuracy"] == pytest.approx(0.7)
    assert m["accuracy_class_0"] == pytest.approx(0.5) and m["accuracy_class_1"] == pytest.approx(5 / 6)
    assert m["f1_pos"] == pytest.approx(10 / 13) and m["recall_macro"] == pytest.approx(2 / 3)
    # AUC on hard scores = P(pos > neg) + P(tie) / 2 over all pairs
    pos, neg = probs[np.asarray(Y_TRUE) == 1, 1], probs[np.asarray(Y_TRUE) == 0, 1]
    ref = np.mean([(a > b) + 0.5 * (a == b) for a in pos for b in neg])
    assert m["auc"] == pytest.approx(ref)


def test_seed000_table2_row1_is_macro_average():
    # Seed 000 Table 2 row 1 on the 234 N / 390 P test set: Acc(N) = 0.538 -> 126 TN, Acc(P) = 0.974 -> 380 TP.
    y = np.r_[np.zeros(234, int), np.ones(390, int)]
    p = np.r_[np.zeros(126, int), np.ones(108, int), np.zeros(10, int), np.ones(380, int)]
    assert accuracy(y, p) == pytest.approx(0.811, abs=6e-4)
    macro = precision_recall_f1(y, p, "macro")
    assert macro.precision == pytest.approx(0.853, abs=1e-3)  # reported P
    assert macro.f1 == pytest.approx(0.773, abs=1e-3)  # reported F1
    assert precision_recall_f1(y, p, "binary").precision == pytest.approx(380 / 488)  # != 0.853: not positive-class


@pytest.mark.parametrize(
    "fn,args,match",
    [
        (confusion_matrix, ([0, 1], [0]), "same length"),
        (confusion_matrix, ([0, 3], [0, 1], 2), "num_classes"),
        (accuracy, ([[0, 1], [1, 0]], [0, 1]), "one-dimensional"),
        (accuracy, ([0.5, 1], [0, 1]), "integer"),
        (precision_recall_f1, ([0, 1], [0, 1], "micro"), "average"),
        (roc_auc, ([0, 1], [0.1]), "rows"),
    ],
    ids=["length", "class_range", "2d_labels", "float_labels", "bad_average", "score_rows"],
)
def test_errors(fn, args, match):
    with pytest.raises(ValueError, match=match):
        fn(*args)


def test_accuracy_ci_is_clopper_pearson():
    from monai_synth.metrics import accuracy_ci

    # textbook values: 90/100 -> [0.8238, 0.9510]; 0/10 -> [0, 1 - 0.025**(1/10)]
    lo, hi = accuracy_ci(90, 100)
    assert (round(lo, 4), round(hi, 4)) == (0.8238, 0.951)
    lo, hi = accuracy_ci(0, 10)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 10), rel=1e-9)
    with pytest.raises(ValueError, match="correct"):
        accuracy_ci(11, 10)


def test_auc_ci_is_hanley_mcneil():
    from monai_synth.metrics import auc_ci

    a, n1, n0 = 0.8, 50, 50  # Hanley & McNeil 1982, Eq. 2 by hand
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se = ((a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a)) / (n1 * n0)) ** 0.5
    lo, hi = auc_ci(a, n1, n0)
    assert se == pytest.approx(0.0445, abs=1e-4)
    assert (lo, hi) == (pytest.approx(a - 1.959964 * se, rel=1e-6), pytest.approx(a + 1.959964 * se, rel=1e-6))
    assert auc_ci(1.0, 3, 3)[1] == 1.0
    with pytest.raises(ValueError, match="n_pos"):
        auc_ci(0.5, 0, 4)
