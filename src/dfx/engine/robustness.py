"""Robustness runs: every image decoded once, each perturbation applied in memory, all measured.

The data set yields, per image, a stack of V variants (raw first, then each perturbation);
the network sees them flattened into one batch. Nothing is written anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dfx.data.dataset import Failure
from dfx.data.perturbations import JpegCompression, Perturbation, Raw
from dfx.data.record import ImageRecord
from dfx.engine.detector import Detector
from dfx.engine.evaluation import (
    EvaluationConfig,
    label_counts,
    measure,
    readable_images,
    select_images,
    unreadable_left_out,
)
from dfx.progress import ProgressReporter
from dfx.threshold import Threshold


@dataclass
class RobustnessRow:
    """Metrics under one perturbation (the raw row has none)."""

    perturbation: str
    """``raw`` or the perturbation's spec token, e.g. ``jpeg:50``, ``blur:2``, ``mirror``."""
    qf: int | None
    """JPEG quality factor of a ``jpeg`` row, else None."""
    n: int
    """Images measured (the same images in every row)."""
    multiclass: dict | None
    """3-class accuracy, macro F1, confusion (None for binary-layout data)."""
    binary: dict
    """Fake-vs-real metrics as in ``evaluate --json``, including ``at_threshold``."""
    per_generator: dict[str, float]
    """Accuracy per ``label/generator``."""

    def to_dict(self) -> dict:
        """One element of the ``rows`` list of the JSON document."""
        return {
            "perturbation": self.perturbation,
            "qf": self.qf,
            "n": self.n,
            "multiclass": self.multiclass,
            "binary": self.binary,
            "per_generator": self.per_generator,
        }


@dataclass
class RobustnessResult:
    """A robustness run: the raw row first, then one row per perturbation."""

    rows: list[RobustnessRow]
    """Raw first, then the perturbations in the order asked."""
    counts: dict[str, int]
    """Images per label after balancing."""
    balanced: bool
    """Whether labels were sampled down to the smallest one."""
    threshold: Threshold
    """The threshold of the second binary decision."""
    failures: list[Failure] = field(default_factory=list)
    """Images that could not be read (left out of every row)."""

    def to_dict(self) -> dict:
        """The ``jpeg-robustness --json`` / ``robustness --json`` document."""
        return {
            "rows": [row.to_dict() for row in self.rows],
            "counts": self.counts,
            "balanced": self.balanced,
            "threshold": self.threshold.to_dict(),
            "failures": [f.to_dict() for f in self.failures],
        }


def measure_robustness(
    detector: Detector,
    images: list[ImageRecord],
    perturbations: list[Perturbation],
    options: EvaluationConfig | None = None,
    *,
    progress: ProgressReporter | None = None,
) -> RobustnessResult:
    """Measure ``detector`` on ``images`` raw and under each perturbation, in one pass.

    ``options.batch_size`` counts network inputs (images × variants); ``options.threshold``
    overrides the detector's calibrated one.
    """
    options = options or EvaluationConfig()
    variants: list[Perturbation] = [Raw(), *(p for p in perturbations if p != Raw())]
    chosen_threshold = detector.resolve_threshold(options.threshold)
    every_image = images
    images, three_class = select_images(images, options.balanced, options.seed)
    outputs = detector.run_variants(
        [image.path for image in images],
        variants,
        batch_size=options.batch_size,
        workers=options.workers,
        progress=progress,
        max_pixels=options.max_pixels,
    )
    kept = readable_images(images, outputs.indices.tolist())
    probs = outputs.values.numpy()
    rows = []
    for position, variant in enumerate(variants):
        measured = measure(
            kept, np.ascontiguousarray(probs[:, position]), chosen_threshold.value, three_class
        )
        rows.append(
            RobustnessRow(
                perturbation=variant.name,
                qf=variant.quality if isinstance(variant, JpegCompression) else None,
                n=measured.n,
                multiclass=measured.multiclass,
                binary=measured.binary,
                per_generator=measured.per_generator,
            )
        )
    failures = outputs.failures + unreadable_left_out(
        every_image, images, options.max_pixels, progress
    )
    return RobustnessResult(rows, label_counts(kept), options.balanced, chosen_threshold, failures)
