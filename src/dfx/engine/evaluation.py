"""Evaluate a detector on labelled images: the paper's Tables 2–3 and per-generator accuracy."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dfx.api import Detector
from dfx.classes import CLASSES, class_index
from dfx.data.dataset import Failure
from dfx.data.layout import scan_dataset
from dfx.data.manifest import ROLES, Manifest
from dfx.engine.sampling import balance
from dfx.errors import DfxError
from dfx.metrics import binary_metrics, grouped_accuracy, multiclass_metrics, p_fake_of
from dfx.progress import ProgressReporter

REAL = class_index("real")


@dataclass(frozen=True)
class LabelledImage:
    """An image with its ground truth."""

    path: Path
    """Where the image is."""
    label: str
    """dm, gan or real; or fake / real for binary-layout data."""
    generator: str
    """The generator (source) folder it came from."""

    @property
    def is_fake(self) -> bool:
        """True unless the image is real."""
        return self.label != "real"


@dataclass
class EvaluationResult:
    """Metrics of one evaluation run (all fractions in [0, 1])."""

    n: int
    """Images that were classified."""
    qf: int | None
    """JPEG quality factor applied before classification (None: raw)."""
    multiclass: dict | None
    """3-class accuracy, macro F1, confusion (None for binary-layout data)."""
    binary: dict
    """Fake-vs-real accuracy, F1, AP and ROC-AUC."""
    per_generator: dict[str, float]
    """Accuracy per ``label/generator`` (3-class where labels allow, else binary)."""
    counts: dict[str, int]
    """Images per label after balancing."""
    balanced: bool
    """Whether labels were sampled down to the smallest one."""
    failures: list[Failure] = field(default_factory=list)
    """Images that could not be read and were left out."""

    def to_dict(self) -> dict:
        """The ``evaluate --json`` document."""
        return {
            "n": self.n,
            "qf": self.qf,
            "balanced": self.balanced,
            "counts": self.counts,
            "multiclass": self.multiclass,
            "binary": self.binary,
            "per_generator": self.per_generator,
            "failures": [{"path": f.source, "error": f.reason} for f in self.failures],
        }


def images_from_manifest(manifest: Manifest, split: str | None = "test") -> list[LabelledImage]:
    """The labelled images of one role of a manifest (all roles when ``split`` is None)."""
    if split is not None and split not in ROLES:
        raise DfxError(f"--split {split!r} is not one of {', '.join(ROLES)}.")
    rows = manifest.select(split)
    if not rows:
        raise DfxError(f"the manifest has no images in the {split} split.")
    return [LabelledImage(manifest.absolute(r), r.label, r.generator) for r in rows]


def images_from_folder(data: str | Path) -> tuple[list[LabelledImage], list[str]]:
    """The labelled images of a data folder in either layout, and the non-image files."""
    scan = scan_dataset(data)
    images = [LabelledImage(scan.root / r.path, r.label, r.generator) for r in scan.records]
    return images, scan.skipped


def evaluate(
    detector: Detector,
    images: list[LabelledImage],
    *,
    qf: int | None = None,
    balanced: bool = True,
    seed: int = 0,
    batch_size: int | None = None,
    workers: int | None = None,
    progress: ProgressReporter | None = None,
) -> EvaluationResult:
    """Classify ``images`` (optionally JPEG-compressed in memory) and measure the results."""
    if qf is not None and not 1 <= qf <= 100:
        raise DfxError(f"--qf must be between 1 and 100, got {qf}.")
    if balanced:
        images = balance(images, lambda image: image.label, np.random.default_rng(seed))
    three_class = all(image.label in CLASSES for image in images)
    targets = [class_index(image.label) if three_class else -1 for image in images]
    outputs = detector.run(
        [image.path for image in images],
        targets=targets,
        qf=qf,
        batch_size=batch_size,
        workers=workers,
        progress=progress,
        description="evaluate" if qf is None else f"evaluate at QF {qf}",
    )
    if not len(outputs.indices):
        raise DfxError("no image could be read, so there is nothing to evaluate.")
    kept = [images[i] for i in outputs.indices.tolist()]
    probs = outputs.values.numpy()
    predicted = probs.argmax(1)
    is_fake = np.array([image.is_fake for image in kept])
    predicted_fake = predicted != REAL
    multiclass = None
    if three_class:
        y_true = outputs.targets.numpy()
        multiclass = multiclass_metrics(y_true, predicted)
        correct = predicted == y_true
    else:
        correct = predicted_fake == is_fake
    groups = [f"{image.label}/{image.generator}" for image in kept]
    counts = {
        label: sum(image.label == label for image in kept)
        for label in sorted({image.label for image in kept})
    }
    return EvaluationResult(
        n=len(kept),
        qf=qf,
        multiclass=multiclass,
        binary=binary_metrics(is_fake, p_fake_of(probs), predicted_fake),
        per_generator=grouped_accuracy(groups, correct),
        counts=counts,
        balanced=balanced,
        failures=outputs.failures,
    )
