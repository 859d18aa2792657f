"""Metrics from predictions, as the paper's tables and the forensic literature report them.

All values are fractions in [0, 1]; a metric that is undefined for the data (AUC with one
class present) is None.
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

from dfx.classes import CLASSES, class_index

REAL = class_index("real")


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


def binary_metrics(is_fake: np.ndarray, p_fake: np.ndarray, predicted_fake: np.ndarray) -> dict:
    """Fake-vs-real accuracy and F1 (fake is the positive class), AP and ROC-AUC of P(fake)."""
    both = len(np.unique(is_fake)) == 2
    return {
        "accuracy": float(skm.accuracy_score(is_fake, predicted_fake)),
        "f1": float(skm.f1_score(is_fake, predicted_fake, zero_division=0)),
        "ap": float(skm.average_precision_score(is_fake, p_fake)) if both else None,
        "auc": float(skm.roc_auc_score(is_fake, p_fake)) if both else None,
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
    for name in sorted(set(groups)):
        result[name] = float(correct[groups_array == name].mean())
    return result
