"""Evaluate a detector on labelled images: the paper's Tables 2–3 and per-generator accuracy."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np

from dfx.classes import CLASSES, REAL, class_index
from dfx.data.dataset import Failure
from dfx.data.decoding import decode_failures
from dfx.data.labelled import LabelledSet
from dfx.data.record import ImageRecord
from dfx.engine.detector import Detector
from dfx.engine.sampling import balance
from dfx.errors import DfxError
from dfx.limits import DEFAULT_MAX_PIXELS
from dfx.metrics import binary_metrics, grouped_accuracy, multiclass_metrics, p_fake_of
from dfx.progress import ProgressReporter, or_null
from dfx.threshold import Threshold, is_called_fake


@dataclass
class EvaluationConfig:
    """How evaluate and the robustness runs choose, classify and judge their images."""

    balanced: bool = True
    """Sample every label down to the smallest one (seeded)."""
    seed: int = 0
    """Seed of the balanced sampling."""
    threshold: float | None = None
    """Threshold on P(fake) overriding the detector's calibrated one (None: keep it)."""
    batch_size: int | None = None
    """Network inputs per step (None: the device's default)."""
    workers: int | None = None
    """Decoding processes (None: from the CPU count, none when one step holds everything)."""
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    """Images with more pixels are skipped as possible decompression bombs (None: no limit)."""

    def to_dict(self) -> dict:
        """Plain-data form for JSON."""
        return asdict(self)


@dataclass
class Measurement:
    """Metrics of one set of predictions (all fractions in [0, 1])."""

    n: int
    """Images that were classified."""
    multiclass: dict | None
    """3-class accuracy, macro F1, confusion (None for binary-layout data)."""
    binary: dict
    """Fake-vs-real metrics of the argmax decision and of P(fake), and ``at_threshold``."""
    per_generator: dict[str, float]
    """Accuracy per ``label/generator`` (3-class where labels allow, else binary)."""
    generators: dict[str, dict]
    """Per ``label/generator``: n, accuracy, binary accuracy (argmax and at the threshold)."""
    is_fake: np.ndarray = field(repr=False)
    """Ground truth fake (True) / real per image (not in JSON)."""
    p_fake: np.ndarray = field(repr=False)
    """P(fake) per image (not in JSON)."""


def measure(
    kept: list[ImageRecord], probs: np.ndarray, threshold: float, three_class: bool
) -> Measurement:
    """All metrics of class probabilities (N, 3) for the images ``kept`` (same order)."""
    predicted = probs.argmax(1)
    is_fake = np.array([image.is_fake for image in kept])
    p_fake = p_fake_of(probs)
    predicted_fake = predicted != REAL
    multiclass = None
    binary_correct = predicted_fake == is_fake
    if three_class:
        y_true = np.array([class_index(image.label) for image in kept])
        multiclass = multiclass_metrics(y_true, predicted)
        correct = predicted == y_true
    else:
        correct = binary_correct
    groups = [f"{image.label}/{image.generator}" for image in kept]
    at_threshold = is_called_fake(p_fake, threshold) == is_fake
    per_group = {
        "accuracy": grouped_accuracy(groups, correct),
        "binary_accuracy": grouped_accuracy(groups, binary_correct),
        "binary_accuracy_at_threshold": grouped_accuracy(groups, at_threshold),
    }
    sizes = Counter(groups)
    return Measurement(
        n=len(kept),
        multiclass=multiclass,
        binary=binary_metrics(is_fake, p_fake, predicted_fake, threshold),
        per_generator=per_group["accuracy"],
        generators={
            name: {"n": sizes[name]} | {key: values[name] for key, values in per_group.items()}
            for name in per_group["accuracy"]
        },
        is_fake=is_fake,
        p_fake=p_fake,
    )


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
    """Fake-vs-real metrics: argmax decision, AP/AUC/EER, and the decision at the threshold."""
    per_generator: dict[str, float]
    """Accuracy per ``label/generator`` (3-class where labels allow, else binary)."""
    counts: dict[str, int]
    """Images per label after balancing."""
    balanced: bool
    """Whether labels were sampled down to the smallest one."""
    failures: list[Failure] = field(default_factory=list)
    """Images that could not be read and were left out."""
    threshold: Threshold = field(default_factory=Threshold.default)
    """The threshold of the second binary decision."""
    generators: dict[str, dict] = field(default_factory=dict)
    """Per ``label/generator``: n, accuracy, binary accuracy (argmax and at the threshold)."""
    is_fake: np.ndarray | None = field(default=None, repr=False)
    """Ground truth per image, for curves and plots (not in JSON)."""
    p_fake: np.ndarray | None = field(default=None, repr=False)
    """P(fake) per image, for curves and plots (not in JSON)."""

    def to_dict(self) -> dict:
        """The ``evaluate --json`` document."""
        return {
            "n": self.n,
            "qf": self.qf,
            "balanced": self.balanced,
            "counts": self.counts,
            "threshold": self.threshold.to_dict(),
            "multiclass": self.multiclass,
            "binary": self.binary,
            "per_generator": self.per_generator,
            "generators": self.generators,
            "failures": [f.to_dict() for f in self.failures],
        }


def select_images(
    images: list[ImageRecord], balanced: bool, seed: int
) -> tuple[list[ImageRecord], bool]:
    """The images to evaluate (balanced if asked) and whether all carry a 3-class label."""
    if balanced:
        images = balance(images, lambda image: image.label, np.random.default_rng(seed))
    return images, all(image.label in CLASSES for image in images)


def unreadable_left_out(
    images: list[ImageRecord],
    drawn: list[ImageRecord],
    max_pixels: int | None,
    progress: ProgressReporter | None = None,
) -> list[Failure]:
    """The unreadable files among the images that balanced sampling did not draw.

    They are not classified, but each is decoded once, so a broken file is reported
    whether or not the draw picked it, with the reason classification would give.
    """
    chosen = {id(image) for image in drawn}
    left_out = [image for image in images if id(image) not in chosen]
    if not left_out:
        return []
    progress = or_null(progress)
    progress.start("left-out", len(left_out), "check images left out by balancing")
    failed = decode_failures(
        [image.path for image in left_out],
        max_pixels,
        on_file=lambda: progress.advance("left-out"),
    )
    progress.finish("left-out")
    return [Failure(-1, reason, str(left_out[i].path)) for i, reason in sorted(failed.items())]


def label_counts(images: list[ImageRecord]) -> dict[str, int]:
    """Images per label, labels sorted."""
    return {
        label: sum(image.label == label for image in images)
        for label in sorted({image.label for image in images})
    }


def evaluate(
    detector: Detector,
    images: list[ImageRecord],
    options: EvaluationConfig | None = None,
    *,
    qf: int | None = None,
    progress: ProgressReporter | None = None,
    description: str | None = None,
) -> EvaluationResult:
    """Classify ``images`` (optionally JPEG-compressed in memory) and measure the results.

    ``options.threshold`` overrides the detector's calibrated threshold on P(fake).
    """
    options = options or EvaluationConfig()
    if qf is not None and not 1 <= qf <= 100:
        raise DfxError(f"a JPEG quality factor must be between 1 and 100, got {qf}.")
    chosen_threshold = detector.resolve_threshold(options.threshold)
    every_image = images
    images, three_class = select_images(images, options.balanced, options.seed)
    targets = [class_index(image.label) if three_class else -1 for image in images]
    outputs = detector.run(
        [image.path for image in images],
        targets=targets,
        qf=qf,
        batch_size=options.batch_size,
        workers=options.workers,
        progress=progress,
        description=description or ("evaluate" if qf is None else f"evaluate at QF {qf}"),
        max_pixels=options.max_pixels,
    )
    kept = readable_images(images, outputs.indices.tolist())
    measured = measure(kept, outputs.values.numpy(), chosen_threshold.value, three_class)
    return EvaluationResult(
        n=measured.n,
        qf=qf,
        multiclass=measured.multiclass,
        binary=measured.binary,
        per_generator=measured.per_generator,
        counts=label_counts(kept),
        balanced=options.balanced,
        failures=outputs.failures
        + unreadable_left_out(every_image, images, options.max_pixels, progress),
        threshold=chosen_threshold,
        generators=measured.generators,
        is_fake=measured.is_fake,
        p_fake=measured.p_fake,
    )


def readable_images(images: list[ImageRecord], positions: list[int]) -> list[ImageRecord]:
    """The images at ``positions`` (those that could be read); fails when there are none."""
    if not positions:
        raise DfxError("no image could be read, so there is nothing to evaluate.")
    return [images[i] for i in positions]


@dataclass
class GeneralizationResult:
    """One evaluation per data set (paper Table 4): binary metrics side by side."""

    sets: list[tuple[str, str, EvaluationResult]]
    """(name, data folder, result) per data set, in the order given."""

    @property
    def failures(self) -> list[Failure]:
        """Unreadable images of every set."""
        return [f for _, _, result in self.sets for f in result.failures]

    def mean(self) -> dict:
        """Unweighted mean over the sets of binary accuracy, balanced accuracy, AP and AUC."""
        means = {}
        for key in ("accuracy", "balanced_accuracy", "ap", "auc"):
            values = [r.binary[key] for _, _, r in self.sets if r.binary.get(key) is not None]
            means[key] = float(np.mean(values)) if values else None
        return means

    def to_dict(self) -> dict:
        """The ``evaluate --data A --data B --json`` document."""
        return {
            "sets": [
                {"name": name, "data": data} | result.to_dict() for name, data, result in self.sets
            ],
            "mean": self.mean(),
        }


def evaluate_sets(
    detector: Detector,
    sets: list[LabelledSet],
    options: EvaluationConfig | None = None,
    *,
    qf: int | None = None,
    progress: ProgressReporter | None = None,
) -> GeneralizationResult:
    """:func:`evaluate` on each labelled set with the same ``options``."""
    results = []
    for labelled in sets:
        result = evaluate(
            detector,
            labelled.images,
            options,
            qf=qf,
            progress=progress,
            description=f"evaluate {labelled.name}",
        )
        results.append((labelled.name, labelled.source, result))
    return GeneralizationResult(results)
