"""Robustness runs: every image decoded once, each perturbation applied in memory, all measured.

The data set yields, per image, a stack of V variants (raw first, then each perturbation);
the network sees them flattened into one batch. Nothing is written anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from dfx.api import Detector, Threshold
from dfx.data.dataset import Failure, VariantDataset
from dfx.data.perturbations import JpegCompression, Perturbation, Raw
from dfx.engine.evaluation import LabelledImage, label_counts, measure, select_images
from dfx.engine.inference import run_network
from dfx.errors import DfxError
from dfx.limits import DEFAULT_MAX_PIXELS
from dfx.progress import ProgressReporter


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


class PerVariant(nn.Module):
    """Apply a network to (B, V, C, H, W) variant stacks: logits (B, V, K)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, stacks: Tensor) -> Tensor:
        batch, variants = stacks.shape[:2]
        logits = self.network(stacks.flatten(0, 1))
        return logits.view(batch, variants, -1)


def robustness(
    detector: Detector,
    images: list[LabelledImage],
    perturbations: list[Perturbation],
    *,
    balanced: bool = True,
    seed: int = 0,
    threshold: float | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
    progress: ProgressReporter | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> RobustnessResult:
    """Measure ``detector`` on ``images`` raw and under each perturbation, in one pass.

    ``batch_size`` counts network inputs (None: the device's default, 32 on CPU, 256 on
    CUDA), so a step reads ``batch_size // (1 + len(perturbations))`` images, at least one.
    ``threshold`` overrides the detector's calibrated one. ``workers`` None: decoding
    processes from the CPU count, none when everything fits in one step.
    """
    variants: list[Perturbation] = [Raw(), *(p for p in perturbations if p != Raw())]
    chosen_threshold = detector.resolve_threshold(threshold)
    images, three_class = select_images(images, balanced, seed)
    dataset = VariantDataset(
        [image.path for image in images],
        None,
        detector.preprocessing,
        variants,
        max_pixels=max_pixels,
    )
    images_per_step = (batch_size or detector.runtime.default_batch_size()) // len(variants)
    loader = detector.data_loader(dataset, max(1, images_per_step), workers)
    outputs = run_network(
        PerVariant(detector.network),
        loader,
        detector.runtime,
        progress=progress,
        description=f"{len(variants)} variants per image",
    )
    if not len(outputs.indices):
        raise DfxError("no image could be read, so there is nothing to evaluate.")
    kept = [images[i] for i in outputs.indices.tolist()]
    probs = torch.softmax(outputs.values, dim=2).numpy()
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
    return RobustnessResult(rows, label_counts(kept), balanced, chosen_threshold, outputs.failures)
