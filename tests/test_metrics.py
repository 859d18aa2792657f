"""Forensic metrics against scikit-learn, the EER, and the calibrated threshold."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from dfx.metrics import (
    binary_confusion,
    binary_metrics,
    curve_points,
    equal_error_rate,
    grouped_accuracy,
    target_metrics,
    validation_report,
)
from dfx.threshold import TRAINING_RULE, VALIDATION_RULE, calibrate

IS_FAKE = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 0, 1], dtype=bool)
P_FAKE = np.array([0.9, 0.8, 0.35, 0.7, 0.55, 0.2, 0.1, 0.4, 0.6, 0.05, 0.3, 0.95, 0.45, 0.5])
PREDICTED = P_FAKE > 0.5


def test_binary_metrics_equal_scikit_learn():
    result = binary_metrics(IS_FAKE, P_FAKE, PREDICTED, threshold=0.42)
    assert result["accuracy"] == pytest.approx(skm.accuracy_score(IS_FAKE, PREDICTED))
    assert result["f1"] == pytest.approx(skm.f1_score(IS_FAKE, PREDICTED))
    assert result["balanced_accuracy"] == pytest.approx(
        skm.balanced_accuracy_score(IS_FAKE, PREDICTED)
    )
    assert result["real_accuracy"] == pytest.approx(
        skm.recall_score(IS_FAKE, PREDICTED, pos_label=False)
    )
    assert result["fake_accuracy"] == pytest.approx(skm.recall_score(IS_FAKE, PREDICTED))
    assert result["ap"] == pytest.approx(skm.average_precision_score(IS_FAKE, P_FAKE))
    assert result["auc"] == pytest.approx(skm.roc_auc_score(IS_FAKE, P_FAKE))
    at = result["at_threshold"]
    decided = P_FAKE >= 0.42
    assert at["threshold"] == 0.42
    assert at["accuracy"] == pytest.approx(skm.accuracy_score(IS_FAKE, decided))
    assert at["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(IS_FAKE, decided))
    assert binary_metrics(IS_FAKE, P_FAKE, PREDICTED).get("at_threshold") is None


def test_one_class_leaves_ranking_metrics_undefined():
    result = binary_metrics(np.ones(3, bool), np.array([0.2, 0.7, 0.9]), np.array([0, 1, 1]))
    assert result["auc"] is None and result["ap"] is None and result["eer"] is None
    assert result["real_accuracy"] is None
    assert result["fake_accuracy"] == pytest.approx(2 / 3)
    assert result["balanced_accuracy"] == pytest.approx(2 / 3)


def test_equal_error_rate():
    # Perfect separation: no errors at the crossing.
    assert equal_error_rate(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])) == 0.0
    # Fully reversed scores: every threshold errs on one side.
    assert equal_error_rate(np.array([1, 1, 0, 0]), np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    # One real scores above one of two fakes: FPR = FNR = 0.5 at the crossing.
    assert equal_error_rate(np.array([0, 0, 1, 1]), np.array([0.1, 0.7, 0.6, 0.9])) == 0.5
    # In general the EER lies between FPR and FNR at the ROC points around the crossing.
    eer = equal_error_rate(IS_FAKE, P_FAKE)
    fpr, tpr, _ = skm.roc_curve(IS_FAKE, P_FAKE)
    fnr = 1 - tpr
    after = int(np.argmax(fpr >= fnr))
    around = [fpr[after - 1], fnr[after - 1], fpr[after], fnr[after]]
    assert min(around) <= eer <= max(around)
    assert eer == pytest.approx(0.25)  # FPR rises 1/6 → 1/2 while FNR stays 1/4: equal at 1/4
    # The crossing in the first step of the curve is interpolated too: a fake tied with one of
    # five reals at the top takes FPR 0 → 0.2 and FNR 1 → 0 at once; the lines meet at 1/6.
    tied = equal_error_rate(np.array([0, 0, 0, 0, 0, 1]), np.array([0.1, 0.2, 0.3, 0.4, 0.9, 0.9]))
    assert tied == pytest.approx(1 / 6)


def test_calibrated_threshold_maximises_balanced_accuracy():
    calibrated = calibrate(IS_FAKE, P_FAKE)
    best = max(skm.balanced_accuracy_score(IS_FAKE, P_FAKE >= t) for t in np.linspace(0, 1, 1001))
    assert calibrated.balanced_accuracy == pytest.approx(best)
    assert skm.balanced_accuracy_score(IS_FAKE, P_FAKE >= calibrated.value) == pytest.approx(best)
    # Separable scores: the threshold falls between the classes, nearest 0.5 among ties.
    separable = calibrate(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9]))
    assert separable.value == pytest.approx(0.5)
    assert separable.balanced_accuracy == 1.0 and separable.n == 4


def test_curve_points_and_binary_confusion():
    curves = curve_points(IS_FAKE, P_FAKE)
    fpr, tpr, _ = skm.roc_curve(IS_FAKE, P_FAKE)
    assert curves["roc"]["fpr"] == fpr.tolist() and curves["roc"]["tpr"] == tpr.tolist()
    assert curves["roc"]["thresholds"] == skm.roc_curve(IS_FAKE, P_FAKE)[2].tolist()
    precision, recall, thresholds = skm.precision_recall_curve(IS_FAKE, P_FAKE)
    assert curves["pr"]["precision"] == precision.tolist()
    assert curves["pr"]["recall"] == recall.tolist()
    assert curves["pr"]["thresholds"] == thresholds.tolist()
    assert curve_points(np.ones(2, bool), np.array([0.1, 0.2])) is None
    assert binary_confusion(IS_FAKE, PREDICTED) == skm.confusion_matrix(IS_FAKE, PREDICTED).tolist()


def test_a_base_model_that_never_predicts_its_class_scores_zero():
    # Table 1 of a collapsed base model: 0 precision, not 1 (scikit-learn's "undefined").
    assert target_metrics(np.array([1, 1, 0, 0]), np.array([0, 0, 0, 0])) == {
        "accuracy": 0.5,
        "recall": 0.0,
        "precision": 0.0,
        "f1": 0.0,
    }
    # No image of the class at all: its recall is 0 too, by the same convention.
    assert target_metrics(np.array([0, 0]), np.array([0, 1]))["recall"] == 0.0


def test_grouped_accuracy_is_per_group_and_sorted():
    groups = ["real/photo", "gan/a", "real/photo", "gan/a", "gan/a"]
    result = grouped_accuracy(groups, np.array([1, 0, 0, 1, 1]))
    assert list(result) == ["gan/a", "real/photo"]
    assert result == {"gan/a": pytest.approx(2 / 3), "real/photo": 0.5}


def test_validation_report_takes_fake_as_not_real_and_names_its_rule():
    # Classes dm, gan, real = 0, 1, 2; P(fake) = 1 - p_real.
    y_true = np.array([0, 1, 2, 2, 1, 2])
    probs = np.array(
        [
            [0.7, 0.2, 0.1],
            [0.1, 0.5, 0.4],
            [0.2, 0.1, 0.7],
            [0.5, 0.1, 0.4],  # a real image called dm: a false positive at the argmax
            [0.3, 0.6, 0.1],
            [0.1, 0.2, 0.7],
        ]
    )
    report, calibration = validation_report(y_true, probs)
    assert report["n"] == 6
    assert report["multiclass"]["accuracy"] == pytest.approx(5 / 6)
    binary = report["binary"]
    assert binary["accuracy"] == pytest.approx(5 / 6)  # the decision at the argmax
    assert binary["real_accuracy"] == pytest.approx(2 / 3)
    assert binary["fake_accuracy"] == 1.0
    is_fake, p_fake = y_true != 2, 1 - probs[:, 2]
    assert binary["auc"] == pytest.approx(skm.roc_auc_score(is_fake, p_fake))
    assert calibration.rule == VALIDATION_RULE
    assert calibration.value == pytest.approx(calibrate(is_fake, p_fake).value)
    assert validation_report(y_true, probs, held_out=False)[1].rule == TRAINING_RULE
