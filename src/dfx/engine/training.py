"""The skeleton every trainer shares: a run's seeds, hold-out, loaders, optimizer, files,
fit, calibration, model-file metrics and result.

The three trainers (:mod:`dfx.engine.base_training`, :mod:`dfx.engine.fusion_training`,
:mod:`dfx.engine.baseline_training`) are recipes over it: which rows, which network,
which loss, which metrics. The training loop itself is :func:`dfx.engine.loop.fit`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from dfx import distributed
from dfx.checkpoint import DETECTOR_FORMAT, ModelFile, save_model_file
from dfx.classes import CLASSES
from dfx.data.dataset import Failure, ImageDataset, failure_records, make_loader
from dfx.data.manifest import Manifest
from dfx.data.record import ImageRecord
from dfx.data.transforms import Preprocessing
from dfx.engine.configs import TrainConfig
from dfx.engine.device import Placement, default_workers, resolve_placement, seed_everything
from dfx.engine.loop import FitResult, fit
from dfx.engine.sampling import hold_out
from dfx.metrics import validation_report
from dfx.progress import ProgressReporter

T = TypeVar("T")

SEED_SALTS: dict[str, int] = {"dm": 0, "gan": 1, "real": 2, "fusion": 3, "baseline": 7}
"""Each run draws its rows and hold-out from ``default_rng([seed, salt])``: the base models
with their class index, the fusion head 3, baselines 7, so that the draws of the runs are
independent yet fixed by ``--seed`` (and the same as in the files of earlier versions)."""


@dataclass
class RunPaths:
    """The files of one run: the model it writes, and beside it its resume state and history."""

    model: Path
    """The model file written at the end."""
    state: Path
    """The resume state, rewritten after every epoch (``<model>.state.pt``)."""
    history: Path
    """The per-epoch history, JSON lines (``<model>.history.jsonl``)."""

    @classmethod
    def of(cls, model: str | Path) -> RunPaths:
        """The paths of the run that writes ``model``."""
        model = Path(model)
        return cls(model, model.with_suffix(".state.pt"), model.with_suffix(".history.jsonl"))


@dataclass
class Run:
    """One training run as it starts: its settings, where it runs, its draws and its files."""

    config: TrainConfig
    """The run's settings."""
    placement: Placement
    """Device, precision and compilation."""
    workers: int
    """DataLoader worker processes."""
    batch_size: int
    """This process's training batch (the global batch shared out under torchrun)."""
    rng: np.random.Generator
    """The run's own draws (:data:`SEED_SALTS`)."""
    paths: RunPaths
    """Its files."""
    kind: str
    """``base``, ``fusion`` or ``baseline``."""
    started: float
    """When it started (``time.perf_counter()``)."""

    def holdout(self, items: Sequence[T], key: Callable[[T], Hashable]) -> tuple[list[T], list[T]]:
        """(train, validation): ``val_fraction`` of each ``key`` group held out."""
        return hold_out(items, key, self.config.val_fraction, self.rng)

    def row_loader(
        self,
        manifest: Manifest,
        target_of: Callable[[ImageRecord], int],
        preprocessing: Preprocessing,
    ) -> Callable[[list[ImageRecord], bool, int], DataLoader]:
        """A function making the DataLoader of some manifest rows: (rows, shuffle, batch size)."""
        config = self.config

        def loader(rows: list[ImageRecord], shuffle: bool, batch_size: int) -> DataLoader:
            dataset = ImageDataset(
                [manifest.absolute(r) for r in rows],
                [target_of(r) for r in rows],
                preprocessing,
                max_pixels=config.max_pixels,
            )
            return make_loader(
                dataset,
                batch_size,
                shuffle=shuffle,
                workers=self.workers,
                pin_memory=self.placement.is_cuda,
                seed=config.seed,
            )

        return loader

    def fit(
        self,
        network: nn.Module,
        train_loader: Iterable,
        val_loader: Iterable | None,
        *,
        loss_fn: nn.CrossEntropyLoss,
        label: str,
        progress: ProgressReporter,
        resume: bool,
        identity: dict,
    ) -> FitResult:
        """Adam, :func:`~dfx.engine.loop.fit` with the run's state and history files, and
        ``network`` left with the kept weights. ``identity`` joins the settings that a
        resumption must match (the rows, the target, the base models)."""
        optimizer, scheduler = make_optimizer(network.parameters(), self.config)
        result = fit(
            network,
            train_loader,
            val_loader,
            epochs=self.config.epochs,
            optimizer=optimizer,
            scheduler=scheduler,
            loss_fn=loss_fn,
            placement=self.placement,
            progress=progress,
            history_path=self.paths.history,
            label=label,
            state_path=self.paths.state,
            resume=resume,
            config=asdict(self.config) | identity,
        )
        network.load_state_dict(result.best_state)
        return result

    def finish(
        self,
        model_file: ModelFile,
        fitted: FitResult,
        counts: dict[str, int],
        failures: list[Failure],
        **details,
    ) -> TrainResult:
        """Write the model file; the run's result (``details``: the fields of its kind)."""
        return TrainResult(
            self.kind,
            save_model_file(model_file, self.paths.model),
            self.paths.history,
            counts,
            fitted.best_epoch,
            fitted.best_val_loss,
            time.perf_counter() - self.started,
            failures,
            **details,
        )

    def finish_detector(
        self,
        fitted: FitResult,
        counts: dict[str, int],
        failures: list[Failure],
        calibrated: tuple[dict, dict],
        *,
        more_metrics: dict | None = None,
        details: dict | None = None,
        **fields,
    ) -> TrainResult:
        """:meth:`finish` for a detector (fusion or baseline). Its file's metrics are the
        validation metrics and threshold of :func:`calibrate`, the kept epoch, the counts
        and ``more_metrics``; ``fields`` are the rest of the file, ``details`` of the result."""
        validation, threshold = calibrated
        metrics = {
            "validation": validation,
            "threshold": threshold,
            "best_epoch": fitted.best_epoch,
            "counts": counts,
            **(more_metrics or {}),
        }
        model_file = ModelFile(
            format=DETECTOR_FORMAT, classes=list(CLASSES), metrics=metrics, **fields
        )
        return self.finish(
            model_file,
            fitted,
            counts,
            failures,
            validation=validation,
            threshold=threshold,
            **(details or {}),
        )


def start_run(config: TrainConfig, name: str, out: str | Path, compile: bool = False) -> Run:
    """Seed everything, choose the placement and workers. ``name`` picks the seed salt: a
    class for a base model, ``fusion`` or ``baseline``."""
    started = time.perf_counter()
    placement = resolve_placement(config.device, config.precision, compile)
    workers = default_workers() if config.workers is None else config.workers
    seed_everything(config.seed)
    return Run(
        config,
        placement,
        workers,
        distributed.per_process_batch_size(config.batch_size),
        np.random.default_rng([config.seed, SEED_SALTS[name]]),
        RunPaths.of(out),
        "base" if name in CLASSES else name,
        started,
    )


def make_optimizer(parameters, settings: TrainConfig):
    """Adam with betas (0.9, 0.999) and, when ``lr_step`` > 0, a StepLR schedule."""
    optimizer = torch.optim.Adam(
        parameters, lr=settings.lr, betas=(0.9, 0.999), weight_decay=settings.weight_decay
    )
    scheduler = (
        torch.optim.lr_scheduler.StepLR(optimizer, settings.lr_step, settings.lr_gamma)
        if settings.lr_step > 0
        else None
    )
    return optimizer, scheduler


def rows_digest(names: Iterable[str]) -> str:
    """A short digest of the inputs a run trains on, for the resume compatibility check."""
    digest = hashlib.blake2b(digest_size=12)
    for name in names:
        digest.update(str(name).encode() + b"\0")
    return digest.hexdigest()


def calibrate(targets: torch.Tensor, logits: torch.Tensor, held_out: bool) -> tuple[dict, dict]:
    """A detector's validation metrics and its threshold on P(fake) calibrated there.

    ``held_out`` False: the images are training images (no validation hold-out), and the
    threshold's rule says so.
    """
    probs = torch.softmax(logits.float(), dim=1).cpu().numpy()
    validation, calibration = validation_report(targets.cpu().numpy(), probs, held_out)
    return validation, calibration.to_dict()


def class_counts(train: int, val: int, train_per_class: Sequence[int]) -> dict[str, int]:
    """A detector's ``counts``: train, val, and per class of train."""
    return {
        "train": train,
        "val": val,
        **{f"train_{n}": int(c) for n, c in zip(CLASSES, train_per_class)},
    }


_DOCUMENTS = {
    "base": (
        "target", "path", "history", "best_epoch", "best_val_loss", "counts", "test", "seconds",
        "failures",
    ),
    "fusion": (
        "path", "history", "best_epoch", "counts", "validation", "extraction_seconds",
        "training_seconds", "failures",
    ),
    "baseline": (
        "path", "history", "best_epoch", "counts", "validation", "threshold", "seconds",
        "failures",
    ),
}  # fmt: skip
"""The keys of each training command's ``--json`` document, in order."""


@dataclass
class TrainResult:
    """What a trainer produced: a base model, a fusion detector or a baseline."""

    kind: str
    """``base``, ``fusion`` or ``baseline``."""
    path: Path
    """The model file written."""
    history_path: Path
    """The per-epoch history (JSON lines)."""
    counts: dict[str, int]
    """Numbers of images (or feature vectors) used: train, val and more per kind."""
    best_epoch: int
    """Epoch whose weights were kept."""
    best_val_loss: float
    """Their validation loss (the training loss without validation data)."""
    seconds: float
    """Wall time."""
    failures: list[Failure] = field(default_factory=list)
    """Images that could not be read and were skipped."""
    target: str | None = None
    """Base models: the class the model specialises in."""
    test_metrics: dict | None = None
    """Base models: Table 1 metrics (target vs others) on the test images (None without)."""
    validation: dict | None = None
    """Detectors: 3-class and binary metrics of the kept weights on the validation data."""
    threshold: dict | None = None
    """Detectors: the threshold on P(fake) calibrated on the validation data."""
    extraction_seconds: float | None = None
    """Fusion: wall time of the one feature-extraction pass."""
    training_seconds: float | None = None
    """Fusion: wall time of head training over the cached features."""

    def to_dict(self) -> dict:
        """The ``--json`` document of its command (train-base: one of its ``models``)."""
        values = {
            "target": self.target,
            "path": str(self.path),
            "history": str(self.history_path),
            "best_epoch": self.best_epoch,
            "best_val_loss": self.best_val_loss,
            "counts": self.counts,
            "test": self.test_metrics,
            "validation": self.validation,
            "threshold": self.threshold,
            "seconds": self.seconds,
            "extraction_seconds": self.extraction_seconds,
            "training_seconds": self.training_seconds,
            "failures": failure_records(self.failures),
        }
        return {key: values[key] for key in _DOCUMENTS[self.kind]}
