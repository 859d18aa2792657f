"""Train one base model: a backbone specialised in "one class vs the others"."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
from torch import nn

from dfx.checkpoint import BASE_FORMAT, ModelFile
from dfx.classes import CLASSES
from dfx.data.manifest import Manifest
from dfx.data.record import ImageRecord
from dfx.engine.configs import BaseTrainConfig
from dfx.engine.inference import run_network
from dfx.engine.sampling import sample_per_group
from dfx.engine.training import TrainResult, rows_digest, start_run
from dfx.errors import DfxError
from dfx.metrics import target_metrics
from dfx.models.backbones import build_network, get_spec
from dfx.progress import ProgressReporter, or_null


def check_target(target: str) -> str:
    """Validate a class name for ``--target``."""
    if target not in CLASSES:
        raise DfxError(f"target {target!r} is not one of {', '.join(CLASSES)} or all.")
    return target


def base_model_path(folder: str | Path, target: str) -> Path:
    """Where the ``target`` base model lies in a folder of base models: ``<folder>/<target>.pt``."""
    return Path(folder) / f"{target}.pt"


def select_base_rows(
    manifest: Manifest, target: str, negative_fraction: float, rng: np.random.Generator
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """All ``base`` images of the target class, and a small stratified share of the others."""
    if not 0 < negative_fraction < 1:
        raise DfxError("the negative fraction must lie strictly between 0 and 1.")
    rows = manifest.select("base")
    positives = [row for row in rows if row.label == target]
    others = [row for row in rows if row.label != target]
    if not positives or not others:
        raise DfxError(
            f"the manifest's base role has {len(positives)} {target} image(s) and "
            f"{len(others)} other image(s); training a {target} model needs both."
        )
    wanted = round(len(positives) * negative_fraction / (1 - negative_fraction))
    negatives = sample_per_group(others, lambda r: (r.label, r.generator), wanted, rng)
    return positives, negatives


def train_base(
    manifest: Manifest,
    target: str,
    config: BaseTrainConfig,
    *,
    out: str | Path,
    progress: ProgressReporter | None = None,
    resume: bool = False,
) -> TrainResult:
    """Train, keep the lowest-validation-loss weights, write the base-model file ``out``.

    The state after each epoch goes to ``<out>.state.pt`` (:class:`~dfx.engine.training.RunPaths`);
    ``resume=True`` continues from it (see :func:`dfx.engine.loop.fit`).
    """
    progress = or_null(progress)
    check_target(target)
    spec = get_spec(config.backbone)
    preprocessing = spec.preprocessing(config.image_size)
    run = start_run(config, target, out)
    positives, negatives = select_base_rows(manifest, target, config.negative_fraction, run.rng)
    train_rows, val_rows = run.holdout(positives + negatives, lambda r: r.label == target)
    loader = run.row_loader(manifest, lambda r: int(r.label == target), preprocessing)
    placement = run.placement
    network = placement.prepare(build_network(spec.name, config.weights, config.image_size))
    progress.notice(
        f"{target} base model: {len(positives)} positives, {len(negatives)} negatives; "
        f"{len(train_rows)} train / {len(val_rows)} val; {spec.name} on {placement.device}"
    )
    result = run.fit(
        network,
        loader(train_rows, True, run.batch_size),
        loader(val_rows, False, config.eval_batch_size) if val_rows else None,
        loss_fn=nn.CrossEntropyLoss(),
        label=f"train {target} base model",
        progress=progress,
        resume=resume,
        identity={"target": target, "rows": rows_digest(r.path for r in train_rows + val_rows)},
    )

    test_rows = manifest.select("test")
    test_metrics = None
    failures = list(result.failures)
    if test_rows:
        outputs = run_network(
            network,
            loader(test_rows, False, config.eval_batch_size),
            placement,
            progress=progress,
            description=f"test {target} base model",
        )
        failures += outputs.failures
        if len(outputs.targets):
            test_metrics = target_metrics(outputs.targets.numpy(), outputs.values.argmax(1).numpy())

    counts = {
        "positives": len(positives),
        "negatives": len(negatives),
        "train": len(train_rows),
        "val": len(val_rows),
        "test": len(test_rows),
    }
    best = result.history[result.best_epoch - 1] if result.best_epoch else None
    model_file = ModelFile(
        format=BASE_FORMAT,
        backbone=spec.name,
        classes=["others", target],
        preprocessing=preprocessing,
        state_dict=result.best_state,
        config=asdict(config),
        metrics={
            "best_epoch": result.best_epoch,
            "validation": {"loss": best.val_loss, "accuracy": best.val_accuracy} if best else None,
            "test": test_metrics,
            "counts": counts,
        },
        target=target,
    )
    return run.finish(
        model_file, result, counts, failures, target=target, test_metrics=test_metrics
    )
