"""Train a baseline: one backbone trained directly on the three classes (paper Table 4).

Protocol, chosen to match the fusion detector's: the baseline sees every image the
detector saw in training, i.e. the ``base`` and ``fusion`` roles of the manifest (never
``test``); 80/20 hold-out per class; Adam with the official defaults; cross entropy with
the paper's class weights w_c = 1 / (training images of class c); the weights with the
lowest validation loss are kept; the threshold on P(fake) is calibrated on the hold-out
like the fusion detector's.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
from torch import nn

from dfx.classes import CLASSES, class_index
from dfx.data.manifest import Manifest, content_digests
from dfx.engine.configs import BaselineTrainConfig
from dfx.engine.inference import run_network
from dfx.engine.losses import class_weights
from dfx.engine.training import TrainResult, calibrate, class_counts, rows_digest, start_run
from dfx.errors import DfxError
from dfx.models.backbones import build_network, get_spec
from dfx.progress import ProgressReporter, or_null

TRAIN_ROLES: tuple[str, ...] = ("base", "fusion")
"""Manifest roles a baseline trains and validates on: all that the fusion detector used."""


def train_baseline(
    manifest: Manifest,
    config: BaselineTrainConfig,
    *,
    out: str | Path,
    progress: ProgressReporter | None = None,
    resume: bool = False,
) -> TrainResult:
    """Train one backbone on dm/gan/real, keep the lowest-validation-loss weights, write ``out``.

    The training state goes to ``<out>.state.pt`` after every epoch; ``resume=True``
    continues from it.
    """
    progress = or_null(progress)
    spec = get_spec(config.backbone)
    preprocessing = spec.preprocessing(config.image_size)
    run = start_run(config, "baseline", out)
    placement = run.placement

    rows = [row for role in TRAIN_ROLES for row in manifest.select(role)]
    missing = [name for name in CLASSES if not any(r.label == name for r in rows)]
    if missing:
        raise DfxError(f"the manifest's base and fusion roles have no {', '.join(missing)} images.")
    train_rows, val_rows = run.holdout(rows, lambda r: r.label)
    train_counts = np.bincount([class_index(r.label) for r in train_rows], minlength=len(CLASSES))

    loader = run.row_loader(manifest, lambda r: class_index(r.label), preprocessing)
    network = placement.prepare(
        build_network(spec.name, config.weights, config.image_size, len(CLASSES))
    )
    progress.notice(
        f"baseline: {len(train_rows)} train / {len(val_rows)} val images; "
        f"{spec.name} on {placement.device}"
    )
    weights = class_weights(train_counts, "baseline").to(placement.device)
    result = run.fit(
        network,
        loader(train_rows, True, run.batch_size),
        loader(val_rows, False, config.eval_batch_size) if val_rows else None,
        loss_fn=nn.CrossEntropyLoss(weight=weights),
        label=f"train {spec.name} baseline",
        progress=progress,
        resume=resume,
        identity={"rows": rows_digest(r.path for r in train_rows + val_rows)},
    )
    outputs = run_network(
        network,
        loader(val_rows or train_rows, False, config.eval_batch_size),
        placement,
        progress=progress,
        description="validate baseline",
    )
    if not len(outputs.targets):
        raise DfxError("no validation image could be read, so no threshold can be calibrated.")
    calibrated = calibrate(outputs.targets, outputs.values, held_out=bool(val_rows))
    return run.finish_detector(
        result,
        class_counts(len(train_rows), len(val_rows), train_counts),
        list({f.source: f for f in result.failures + outputs.failures}.values()),
        calibrated,
        backbone=spec.name,
        preprocessing=preprocessing,
        state_dict=result.best_state,
        config={"baseline": asdict(config) | {"roles": list(TRAIN_ROLES)}},
        architecture="baseline",
        trained_on=content_digests(manifest, rows),
    )
