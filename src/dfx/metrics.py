"""Metrics from predictions, as the paper's tables and the forensic literature report them.

All values are fractions in [0, 1]; a metric that is undefined for the data (AUC with one
class present) is None.
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

from dfx.classes import CLASSES, REAL
from dfx.threshold import TRAINING_RULE, VALIDATION_RULE, Calibration, calibrate, is_called_fake


def multiclass_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """3-class accuracy, macro F1 and the confusion matrix (rows: true, columns: predicted)."""
    labels = list(range(len(CLASSES)))
    return {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "f1_macro": float(
            skm.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
        ),
        "confusion": skm.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def binary_metrics(
    is_fake: np.ndarray,
    p_fake: np.ndarray,
    predicted_fake: np.ndarray,
    threshold: float | None = None,
) -> dict:
    """Fake-vs-real metrics (fake is the positive class) of a decision and of the P(fake) scores.

    ``accuracy``, ``f1``, ``balanced_accuracy``, ``real_accuracy`` and ``fake_accuracy`` judge
    ``predicted_fake`` (the argmax decision); ``ap``, ``auc`` and ``eer`` judge the ranking by
    ``p_fake``; with a ``threshold``, ``at_threshold`` judges the decision ``p_fake >= threshold``.
    """
    is_fake = np.asarray(is_fake, dtype=bool)
    p_fake = np.asarray(p_fake, dtype=float)
    both = len(np.unique(is_fake)) == 2
    result = decision_metrics(is_fake, np.asarray(predicted_fake, dtype=bool))
    result |= {
        "ap": float(skm.average_precision_score(is_fake, p_fake)) if both else None,
        "auc": float(skm.roc_auc_score(is_fake, p_fake)) if both else None,
        "eer": equal_error_rate(is_fake, p_fake) if both else None,
    }
    if threshold is not None:
        result["at_threshold"] = {"threshold": float(threshold)} | decision_metrics(
            is_fake, is_called_fake(p_fake, threshold)
        )
    return result


def decision_metrics(is_fake: np.ndarray, predicted_fake: np.ndarray) -> dict:
    """Accuracy, F1, balanced accuracy, and accuracy on real and on fake images separately."""
    real_accuracy = _recall(~is_fake, ~predicted_fake)
    fake_accuracy = _recall(is_fake, predicted_fake)
    present = [v for v in (real_accuracy, fake_accuracy) if v is not None]
    return {
        "accuracy": float(skm.accuracy_score(is_fake, predicted_fake)),
        "f1": float(skm.f1_score(is_fake, predicted_fake, zero_division=0)),
        # With one class present, balanced accuracy is that class's accuracy (as sklearn's).
        "balanced_accuracy": float(np.mean(present)),
        "real_accuracy": real_accuracy,
        "fake_accuracy": fake_accuracy,
    }


def _recall(members: np.ndarray, hits: np.ndarray) -> float | None:
    """Share of ``members`` that are ``hits`` (None when there are no members)."""
    return float(hits[members].mean()) if members.any() else None


def equal_error_rate(is_fake: np.ndarray, p_fake: np.ndarray) -> float:
    """The error rate where false-positive and false-negative rates are equal.

    Read off the ROC curve, interpolating linearly between the two points where
    FPR − FNR changes sign.
    """
    fpr, tpr, _ = skm.roc_curve(is_fake, p_fake)
    fnr = 1.0 - tpr
    gap = fpr - fnr  # rises from -1 (threshold above every score) to +1
    after = int(np.argmax(gap >= 0))
    if after == 0 or gap[after] == 0:
        return float((fpr[after] + fnr[after]) / 2)
    before = after - 1
    weight = -gap[before] / (gap[after] - gap[before])
    return float(fpr[before] + weight * (fpr[after] - fpr[before]))


def curve_points(is_fake: np.ndarray, p_fake: np.ndarray) -> dict | None:
    """ROC and precision-recall curve points of P(fake) (None unless both classes occur)."""
    is_fake = np.asarray(is_fake, dtype=bool)
    if len(np.unique(is_fake)) < 2:
        return None
    fpr, tpr, roc_thresholds = skm.roc_curve(is_fake, p_fake)
    precision, recall, pr_thresholds = skm.precision_recall_curve(is_fake, p_fake)
    return {
        "roc": {
            "fpr": fpr.tolist(),
            "tpr": tpr.tolist(),
            "thresholds": roc_thresholds.tolist(),
        },
        "pr": {
            "precision": precision.tolist(),
            "recall": recall.tolist(),
            "thresholds": pr_thresholds.tolist(),
        },
    }


def target_metrics(is_target: np.ndarray, predicted_target: np.ndarray) -> dict:
    """A base model's "target vs others" accuracy, recall, precision and F1 (paper Table 1)."""
    return {
        "accuracy": float(skm.accuracy_score(is_target, predicted_target)),
        "recall": float(skm.recall_score(is_target, predicted_target, zero_division=0)),
        "precision": float(skm.precision_score(is_target, predicted_target, zero_division=0)),
        "f1": float(skm.f1_score(is_target, predicted_target, zero_division=0)),
    }


def p_fake_of(probs: np.ndarray) -> np.ndarray:
    """P(fake) = p_dm + p_gan from (N, 3) class probabilities."""
    return 1.0 - probs[:, REAL]


def grouped_accuracy(groups: list[str], correct: np.ndarray) -> dict[str, float]:
    """Accuracy per group name, groups sorted by name."""
    result: dict[str, float] = {}
    groups_array = np.asarray(groups)
    correct = np.asarray(correct)
    for name in sorted(set(groups)):
        result[name] = float(correct[groups_array == name].mean())
    return result


def binary_confusion(is_fake: np.ndarray, predicted_fake: np.ndarray) -> list[list[int]]:
    """The 2×2 confusion matrix, rows true, columns predicted, order (real, fake)."""
    return skm.confusion_matrix(is_fake, predicted_fake, labels=[False, True]).tolist()


def validation_report(
    y_true: np.ndarray, probs: np.ndarray, held_out: bool = True
) -> tuple[dict, Calibration]:
    """3-class and binary metrics of validation predictions, and the threshold calibrated on them.

    The threshold on P(fake) maximises balanced accuracy on these images
    (:func:`dfx.threshold.calibrate`); the binary metrics include the decision there.
    ``held_out`` False: the images are training images (no validation hold-out), and the
    calibration's rule says so.
    """
    is_fake, p_fake = y_true != REAL, p_fake_of(probs)
    calibration = calibrate(is_fake, p_fake, VALIDATION_RULE if held_out else TRAINING_RULE)
    y_pred = probs.argmax(1)
    report = {
        "n": len(y_true),
        "multiclass": multiclass_metrics(y_true, y_pred),
        "binary": binary_metrics(is_fake, p_fake, y_pred != REAL, calibration.value),
    }
    return report, calibration
