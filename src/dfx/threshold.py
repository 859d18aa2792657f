"""The threshold on P(fake): its value, where it came from, its calibration and resolution.

A detector calls an image fake when P(fake) >= t (:func:`is_called_fake`, the one place
that decision is written). The threshold t is calibrated on held-out
data at training time and stored in the model file (its :class:`Calibration` dict form);
``--threshold`` overrides it, and files without one fall back to :data:`DEFAULT_THRESHOLD`.
Torch-free, so the command line can use it before any model loads.
"""

from __future__ import annotations

from dataclasses import dataclass

from dfx.errors import DfxError

DEFAULT_THRESHOLD = 0.5
"""The threshold on P(fake) of model files without a calibrated one."""

VALIDATION_RULE = "max balanced accuracy on validation"
"""How a threshold calibrated on validation data was chosen."""

TRAINING_RULE = "max balanced accuracy on the training images (no validation hold-out)"
"""How it was chosen when training held nothing out (``--val-fraction 0``)."""

SOURCE_LABELS: dict[str, str] = {
    "option": "--threshold",
    "model": "calibrated",
    "default": "default",
}
"""How each threshold source is named in tables."""


@dataclass(frozen=True)
class Calibration:
    """A threshold calibrated on held-out data, as a model file stores it."""

    value: float
    """The threshold t: P(fake) >= t is called fake."""
    rule: str
    """How t was chosen (:data:`VALIDATION_RULE` or :data:`TRAINING_RULE`)."""
    n: int
    """Images it was calibrated on."""
    balanced_accuracy: float
    """Balanced accuracy of the decision at t on those images."""

    def to_dict(self) -> dict:
        """The ``metrics.threshold`` entry of a model file."""
        return {
            "value": self.value,
            "rule": self.rule,
            "n": self.n,
            "balanced_accuracy": self.balanced_accuracy,
        }

    @staticmethod
    def value_in(stored: object) -> float | None:
        """The threshold value of a model file's ``metrics.threshold`` entry (None: absent)."""
        if isinstance(stored, dict) and isinstance(stored.get("value"), (int, float)):
            return float(stored["value"])
        return None


@dataclass(frozen=True)
class Threshold:
    """The threshold on P(fake) of the second binary decision, and where it came from."""

    value: float
    """Images with P(fake) >= value are called fake."""
    source: str
    """``option`` (--threshold), ``model`` (calibrated at training time) or ``default`` (0.5)."""

    @classmethod
    def default(cls) -> Threshold:
        """The threshold of a model file without a calibrated one."""
        return cls(DEFAULT_THRESHOLD, "default")

    @property
    def label(self) -> str:
        """The source as tables name it."""
        return SOURCE_LABELS.get(self.source, "")

    def to_dict(self) -> dict:
        """Plain-data form for JSON."""
        return {"value": self.value, "source": self.source}


def is_called_fake(p_fake, threshold: float):
    """The decision at ``threshold``: P(fake) >= t is fake (a bool, or an array of them)."""
    return p_fake >= threshold


def resolve_threshold(override: float | Threshold | None, calibrated: float | None) -> Threshold:
    """``override`` if given, else the model file's ``calibrated`` threshold, else 0.5.

    A :class:`Threshold` given as ``override`` was resolved already and is kept as it is.
    """
    if isinstance(override, Threshold):
        return override
    if override is not None:
        if not 0.0 <= override <= 1.0:
            raise DfxError(f"a threshold on P(fake) must be between 0 and 1, got {override}.")
        return Threshold(float(override), "option")
    if calibrated is not None:
        return Threshold(calibrated, "model")
    return Threshold.default()


def calibrate(is_fake, p_fake, rule: str = VALIDATION_RULE) -> Calibration:
    """The threshold on P(fake) that maximises balanced accuracy on held-out data.

    Candidates are 0, 1 and the midpoints between consecutive distinct scores (a decision
    is ``p_fake >= t``); among equally good ones, the one nearest 0.5 wins.
    """
    import numpy as np  # here: the command line reads thresholds before numpy is needed

    is_fake = np.asarray(is_fake, dtype=bool)
    p_fake = np.asarray(p_fake, dtype=float)
    scores = np.unique(p_fake)
    candidates = np.concatenate([[0.0], (scores[1:] + scores[:-1]) / 2, [1.0]])
    # Counting by binary search keeps this O(N log N) for validation sets of any size.
    fake_scores, real_scores = np.sort(p_fake[is_fake]), np.sort(p_fake[~is_fake])
    below_fake = np.searchsorted(fake_scores, candidates, side="left")
    below_real = np.searchsorted(real_scores, candidates, side="left")
    fake_rate = (len(fake_scores) - below_fake) / max(len(fake_scores), 1)
    real_rate = below_real / max(len(real_scores), 1)
    score = (fake_rate + real_rate) / 2
    best = np.flatnonzero(np.isclose(score, score.max()))
    chosen = best[np.argmin(np.abs(candidates[best] - 0.5))]
    return Calibration(
        value=float(candidates[chosen]),
        rule=rule,
        n=int(len(p_fake)),
        balanced_accuracy=float(score[chosen]),
    )
