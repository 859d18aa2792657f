"""Train a baseline: one backbone trained directly on the three classes (paper Table 4).

Protocol, chosen to match the fusion detector's: the baseline sees every image the
detector saw in training, i.e. the ``base`` and ``fusion`` roles of the manifest (never
``test``); 80/20 hold-out per class; Adam with the official defaults; cross entropy with
the paper's class weights w_c = 1 / (training images of class c); the weights with the
lowest validation loss are kept; the threshold on P(fake) is calibrated on the hold-out
like the fusion detector's.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dfx.checkpoint import DETECTOR_FORMAT, ModelFile, save_model_file
from dfx.classes import CLASSES, class_index
from dfx.data.dataset import Failure, failure_records
from dfx.data.manifest import Manifest, content_digests
from dfx.engine.base_training import row_loader
from dfx.engine.configs import BaselineTrainConfig
from dfx.engine.inference import run_network
from dfx.engine.loop import fit, make_optimizer, rows_digest, start_training
from dfx.engine.losses import class_weights
from dfx.engine.sampling import holdout_split
from dfx.errors import DfxError
from dfx.metrics import validation_report
from dfx.models.backbones import build_network, get_spec
from dfx.progress import ProgressReporter, or_null

TRAIN_ROLES: tuple[str, ...] = ("base", "fusion")
"""Manifest roles a baseline trains and validates on: all that the fusion detector used."""


@dataclass
class BaselineTrainResult:
    """What training a baseline produced."""

    path: Path
    """The detector file written."""
    history_path: Path
    """The per-epoch history (JSON lines)."""
    counts: dict[str, int]
    """Numbers of images: train, val, and per class of train."""
    best_epoch: int
    """Epoch whose weights were kept."""
    validation: dict
    """3-class and binary metrics of the kept weights on the validation images."""
    threshold: dict
    """The threshold on P(fake) calibrated on the validation images."""
    seconds: float
    """Wall time."""
    failures: list[Failure] = field(default_factory=list)
    """Images that could not be read and were skipped."""

    def to_dict(self) -> dict:
        """The ``train-baseline --json`` document."""
        return {
            "path": str(self.path),
            "history": str(self.history_path),
            "best_epoch": self.best_epoch,
            "counts": self.counts,
            "validation": self.validation,
            "threshold": self.threshold,
            "seconds": self.seconds,
            "failures": failure_records(self.failures),
        }


def train_baseline(
    manifest: Manifest,
    config: BaselineTrainConfig,
    out: str | Path,
    progress: ProgressReporter | None = None,
    *,
    resume: bool = False,
) -> BaselineTrainResult:
    """Train one backbone on dm/gan/real, keep the lowest-validation-loss weights, write it.

    The training state goes to ``out`` with the suffix ``.state.pt`` after every epoch;
    ``resume=True`` continues from it.
    """
    started = time.perf_counter()
    progress = or_null(progress)
    spec = get_spec(config.backbone)
    preprocessing = spec.preprocessing(config.image_size)
    runtime, workers, train_batch_size = start_training(config)
    # Salted apart from the base models' draws (salts 0-2) and the fusion head's (3).
    rng = np.random.default_rng([config.seed, 7])

    rows = [row for role in TRAIN_ROLES for row in manifest.select(role)]
    missing = [name for name in CLASSES if not any(r.label == name for r in rows)]
    if missing:
        raise DfxError(
            f"the manifest's base and fusion splits have no {', '.join(missing)} images."
        )
    train_rows, val_rows = holdout_split(rows, lambda r: r.label, config.val_fraction, rng)
    train_counts = np.bincount([class_index(r.label) for r in train_rows], minlength=len(CLASSES))

    loader = row_loader(
        manifest, lambda r: class_index(r.label), preprocessing, config, runtime, workers
    )
    network = runtime.prepare(
        build_network(spec.name, config.weights, config.image_size, len(CLASSES))
    )
    optimizer, scheduler = make_optimizer(network.parameters(), config)
    out = Path(out)
    history_path = out.with_suffix(".history.jsonl")
    progress.notice(
        f"baseline: {len(train_rows)} train / {len(val_rows)} val images; "
        f"{spec.name} on {runtime.device}"
    )
    weights = class_weights(train_counts, "baseline").to(runtime.device)
    result = fit(
        network,
        loader(train_rows, True, train_batch_size),
        loader(val_rows, False, config.eval_batch_size) if val_rows else None,
        epochs=config.epochs,
        optimizer=optimizer,
        scheduler=scheduler,
        loss_fn=nn.CrossEntropyLoss(weight=weights),
        runtime=runtime,
        progress=progress,
        history_path=history_path,
        label=f"train {spec.name} baseline",
        state_path=out.with_suffix(".state.pt"),
        resume=resume,
        config=asdict(config) | {"rows": rows_digest(r.path for r in train_rows + val_rows)},
    )
    network.load_state_dict(result.best_state)
    outputs = run_network(
        network,
        loader(val_rows or train_rows, False, config.eval_batch_size),
        runtime,
        progress=progress,
        description="validate baseline",
    )
    if not len(outputs.targets):
        raise DfxError("no validation image could be read, so no threshold can be calibrated.")
    probs = torch.softmax(outputs.values, dim=1).numpy()
    validation, calibration = validation_report(
        outputs.targets.numpy(), probs, held_out=bool(val_rows)
    )
    threshold = calibration.to_dict()
    counts = {
        "train": len(train_rows),
        "val": len(val_rows),
        **{f"train_{n}": int(c) for n, c in zip(CLASSES, train_counts)},
    }
    model_file = ModelFile(
        format=DETECTOR_FORMAT,
        backbone=spec.name,
        classes=list(CLASSES),
        preprocessing=preprocessing,
        state_dict=result.best_state,
        config={"baseline": asdict(config) | {"roles": list(TRAIN_ROLES)}},
        metrics={
            "validation": validation,
            "threshold": threshold,
            "best_epoch": result.best_epoch,
            "counts": counts,
        },
        architecture="baseline",
        trained_on=content_digests(manifest, rows),
    )
    save_model_file(model_file, out)
    failures = list({f.source: f for f in result.failures + outputs.failures}.values())
    return BaselineTrainResult(
        out,
        history_path,
        counts,
        result.best_epoch,
        validation,
        threshold,
        time.perf_counter() - started,
        failures,
    )
