"""Audit a labelled data set for traits that separate its classes besides the generator.

A detector learns whatever tells the classes apart. When the real images of a data set are
JPEGs and the fakes PNGs, or the classes differ in size or compression, the file format is
the easiest thing to learn, and a detector that learned it calls every PNG fake. The audit
measures how far such container traits alone separate the classes (the *shortcut score*:
the cross-validated balanced accuracy of a decision tree that sees only them), summarises
the traits per class and generator, and finds copies and near-copies across labels and
roles. It reads the files and changes nothing.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from dfx.classes import CLASSES
from dfx.data.copies import CopyGroup, copy_counts, find_copies, perceptual_hash
from dfx.data.decoding import load_rgb
from dfx.data.metadata import FileFacts, read_facts
from dfx.data.record import ImageRecord
from dfx.errors import ImageReadError
from dfx.progress import ProgressReporter, or_null

SHORTCUT_WARNING = 0.8
"""Shortcut scores (balanced accuracy) from this value on earn a warning."""

TRAITS: dict[str, tuple[str, ...]] = {
    "format": ("format",),
    "jpeg_quality": ("jpeg_quality",),
    "size": ("width", "height"),
    "mode": ("mode",),
    "bytes_per_pixel": ("bytes_per_pixel",),
}
"""The container traits the shortcut score looks at, by name, with their feature columns."""

ADVICE = (
    "re-encode every class the same way (for example all as JPEG at one quality) or "
    "JPEG-compress all training images at random qualities",
    "resize or crop every class to the same sizes",
    "evaluate with 'dfx evaluate --qf' at several qualities to see how much of the accuracy "
    "is the container",
)
"""What to do when the shortcut score is high."""


@dataclass(frozen=True)
class AuditedFile:
    """An image's container traits and content fingerprints."""

    record: ImageRecord
    """The image (its path relative to the data folder; its role when from a manifest)."""
    facts: FileFacts
    """Format, size, mode, JPEG quality, metadata blocks."""
    sha256: str
    """Hash of the whole file (equal for byte-identical copies)."""
    phash: int
    """64-bit perceptual hash (DCT) of the decoded image, equal or close for near-copies."""
    thumbnail: np.ndarray | None = field(repr=False, compare=False, default=None)
    """8 × 8 RGB version (float), to confirm near-copies by colour."""


@dataclass(frozen=True)
class Spread:
    """Minimum, median and maximum of a number over a group of images."""

    min: float
    """Smallest value."""
    median: float
    """Median value."""
    max: float
    """Largest value."""

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread | None:
        """The spread of ``values`` (None when empty)."""
        if not len(values):
            return None
        array = np.asarray(values, dtype=float)
        return cls(float(array.min()), float(np.median(array)), float(array.max()))

    def to_dict(self) -> dict:
        """Plain-data form for JSON."""
        return {"min": self.min, "median": self.median, "max": self.max}


@dataclass(frozen=True)
class GroupSummary:
    """The container traits of the images of one class, or of one generator of a class."""

    label: str
    """The class."""
    generator: str | None
    """The generator (None: the whole class)."""
    n: int
    """Number of images."""
    formats: dict[str, int]
    """Format → number of images."""
    modes: dict[str, int]
    """Colour mode → number of images."""
    jpeg_quality: Spread | None
    """Estimated JPEG qualities of its JPEGs (None: no JPEG)."""
    width: Spread
    """Widths in pixels."""
    height: Spread
    """Heights in pixels."""
    bytes_per_pixel: Spread
    """File bytes per pixel."""
    exif: float
    """Share of images with EXIF data."""
    icc: float
    """Share of images with an ICC profile."""
    xmp: float
    """Share of images with XMP."""

    def to_dict(self) -> dict:
        """Plain-data form for JSON."""
        return {
            "label": self.label,
            "generator": self.generator,
            "n": self.n,
            "formats": self.formats,
            "modes": self.modes,
            "jpeg_quality": self.jpeg_quality.to_dict() if self.jpeg_quality else None,
            "width": self.width.to_dict(),
            "height": self.height.to_dict(),
            "bytes_per_pixel": self.bytes_per_pixel.to_dict(),
            "exif": self.exif,
            "icc": self.icc,
            "xmp": self.xmp,
        }


@dataclass
class AuditReport:
    """What ``dfx audit`` found."""

    root: Path
    """The data folder."""
    files: list[AuditedFile]
    """Every image that could be read."""
    failures: list[tuple[str, str]]
    """(path, reason) of images that could not be read."""
    classes: list[GroupSummary]
    """Traits per class."""
    generators: list[GroupSummary]
    """Traits per class and generator."""
    shortcut_score: dict[str, float | None]
    """``real_vs_fake`` and ``three_class``: balanced accuracy from the traits alone."""
    shortcut_chance: dict[str, float | None]
    """The balanced accuracy of guessing, for each score."""
    shortcut_by_trait: dict[str, float | None]
    """Real-vs-fake shortcut score of each trait alone."""
    copies: list[CopyGroup] = field(default_factory=list)
    """Exact copies and near-copies, each group with its labels and roles."""

    @property
    def warning(self) -> bool:
        """Whether a shortcut score reaches :data:`SHORTCUT_WARNING`."""
        return any(s is not None and s >= SHORTCUT_WARNING for s in self.shortcut_score.values())

    def to_dict(self) -> dict:
        """Plain-data form for JSON."""
        return {
            "data": str(self.root),
            "n": len(self.files),
            "failures": [{"path": path, "error": reason} for path, reason in self.failures],
            "shortcut_score": self.shortcut_score,
            "shortcut_score_chance": self.shortcut_chance,
            "shortcut_score_by_trait": self.shortcut_by_trait,
            "shortcut_warning": self.warning,
            "shortcut_warning_at": SHORTCUT_WARNING,
            "advice": list(ADVICE) if self.warning else [],
            "classes": [group.to_dict() for group in self.classes],
            "generators": [group.to_dict() for group in self.generators],
            "copies": [group.to_dict() for group in self.copies],
            "copy_counts": copy_counts(self.copies),
        }


def audit(
    root: str | Path,
    records: Sequence[ImageRecord],
    *,
    workers: int | None = None,
    progress: ProgressReporter | None = None,
) -> AuditReport:
    """Read every image of ``records`` (paths relative to ``root``) and audit the set."""
    root = Path(root)
    progress = or_null(progress)
    workers = workers or min(8, os.cpu_count() or 1)
    progress.start("audit", len(records), "audit")

    def examine(record: ImageRecord) -> AuditedFile | tuple[str, str]:
        try:
            result = _examine(root, record)
        except ImageReadError as error:
            result = (record.path, str(error))
        progress.advance("audit")
        return result

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(examine, records))
    progress.finish("audit")
    files = [r for r in results if isinstance(r, AuditedFile)]
    failures = [r for r in results if not isinstance(r, AuditedFile)]
    binary = {f.record.label for f in files} <= {"real", "fake"}
    scores, chance = _shortcut_scores(files, binary)
    return AuditReport(
        root=root,
        files=files,
        failures=failures,
        classes=_summaries(files, by_generator=False),
        generators=_summaries(files, by_generator=True),
        shortcut_score=scores,
        shortcut_chance=chance,
        shortcut_by_trait={
            name: _score(files, columns, _is_fake(files)) for name, columns in TRAITS.items()
        },
        copies=find_copies(files),
    )


def _examine(root: Path, record: ImageRecord) -> AuditedFile:
    path = root / record.path
    facts = read_facts(path)
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as error:
        raise ImageReadError(f"cannot read it ({error.strerror or error})") from error
    image = load_rgb(path, target_size=32)
    thumbnail = np.asarray(image.resize((8, 8), Image.Resampling.BOX), dtype=np.float32)
    return AuditedFile(record, facts, digest.hexdigest(), perceptual_hash(image), thumbnail)


# --- summaries ---------------------------------------------------------------------------------


def _summaries(files: list[AuditedFile], by_generator: bool) -> list[GroupSummary]:
    groups: dict[tuple[str, str | None], list[FileFacts]] = defaultdict(list)
    for file in files:
        key = (file.record.label, file.record.generator if by_generator else None)
        groups[key].append(file.facts)
    order = {label: i for i, label in enumerate(CLASSES)}
    keys = sorted(groups, key=lambda k: (order.get(k[0], len(order)), k[0], k[1] or ""))
    return [_summary(label, generator, groups[label, generator]) for label, generator in keys]


def _summary(label: str, generator: str | None, facts: list[FileFacts]) -> GroupSummary:
    n = len(facts)
    qualities = [f.jpeg_quality for f in facts if f.jpeg_quality is not None]
    return GroupSummary(
        label=label,
        generator=generator,
        n=n,
        formats=dict(Counter(f.format for f in facts).most_common()),
        modes=dict(Counter(f.mode for f in facts).most_common()),
        jpeg_quality=Spread.of(qualities),
        width=Spread.of([f.width for f in facts]),
        height=Spread.of([f.height for f in facts]),
        bytes_per_pixel=Spread.of([f.bytes_per_pixel for f in facts]),
        exif=sum(f.exif for f in facts) / n,
        icc=sum(f.icc for f in facts) / n,
        xmp=sum(f.xmp for f in facts) / n,
    )


# --- the shortcut score ------------------------------------------------------------------------


def _is_fake(files: list[AuditedFile]) -> np.ndarray:
    return np.array([file.record.label != "real" for file in files], dtype=int)


def _shortcut_scores(
    files: list[AuditedFile], binary: bool
) -> tuple[dict[str, float | None], dict[str, float | None]]:
    columns = tuple(c for names in TRAITS.values() for c in names)
    labels = np.array([file.record.label for file in files])
    scores = {"real_vs_fake": _score(files, columns, _is_fake(files))}
    scores["three_class"] = None if binary else _score(files, columns, labels)
    chance = {
        "real_vs_fake": 0.5,
        "three_class": None if binary else 1.0 / max(1, len(set(labels.tolist()))),
    }
    return scores, chance


def _features(files: list[AuditedFile], columns: Sequence[str]) -> np.ndarray:
    """The chosen traits as numbers; formats and modes become one column per value."""
    parts = []
    for column in columns:
        values = [_trait(file.facts, column) for file in files]
        if column in ("format", "mode"):
            kinds = sorted(set(values))
            parts.append(np.array([[v == k for k in kinds] for v in values], dtype=float))
        else:
            parts.append(np.asarray(values, dtype=float)[:, None])
    return np.hstack(parts) if parts else np.zeros((len(files), 0))


def _trait(facts: FileFacts, column: str):
    if column == "bytes_per_pixel":
        return facts.bytes_per_pixel
    if column == "jpeg_quality":
        return facts.jpeg_quality or 0  # 0: not a JPEG (its format column says which)
    return getattr(facts, column)


def _score(files: list[AuditedFile], columns: Sequence[str], targets: np.ndarray) -> float | None:
    """Cross-validated balanced accuracy of a shallow decision tree on the traits alone."""
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.tree import DecisionTreeClassifier

    counts = Counter(targets.tolist())
    if len(counts) < 2 or min(counts.values()) < 2:
        return None
    folds = StratifiedKFold(n_splits=min(5, min(counts.values())), shuffle=True, random_state=0)
    tree = DecisionTreeClassifier(
        max_depth=6, min_samples_leaf=5, class_weight="balanced", random_state=0
    )
    predicted = cross_val_predict(tree, _features(files, columns), targets, cv=folds)
    return float(balanced_accuracy_score(targets, predicted))
