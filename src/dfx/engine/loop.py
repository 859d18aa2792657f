"""The training loop shared by base models and the fusion head."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from dfx.atomic import atomic_write
from dfx.data.dataset import Batch, Failure
from dfx.engine.device import Runtime
from dfx.progress import ProgressReporter, or_null


@dataclass
class TrainSettings:
    """Optimisation settings shared by base-model and fusion training (official defaults)."""

    epochs: int = 50
    """Training epochs."""
    batch_size: int = 32
    """Samples per training step."""
    lr: float = 1e-4
    """Adam learning rate."""
    weight_decay: float = 1e-3
    """Adam weight decay."""
    lr_step: int = 0
    """StepLR period in epochs (0: constant learning rate)."""
    lr_gamma: float = 0.1
    """StepLR decay factor."""
    val_fraction: float = 0.2
    """Share held out for validation (kept weights: lowest validation loss)."""
    seed: int = 0
    """Seed for sampling, initialisation and shuffling."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    precision: str = "auto"
    """Autocast precision: auto (bf16/fp16 on CUDA, fp32 on CPU), fp32, bf16, fp16."""
    workers: int | None = None
    """DataLoader worker processes (None: one less than the CPU count, at most 16)."""


def make_optimizer(parameters, settings: TrainSettings):
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


@dataclass
class EpochRecord:
    """Figures of one training epoch."""

    epoch: int
    """Epoch number, from 1."""
    train_loss: float
    """Mean training loss."""
    train_accuracy: float
    """Training accuracy (fraction)."""
    val_loss: float
    """Mean validation loss (NaN without validation data)."""
    val_accuracy: float
    """Validation accuracy (fraction; NaN without validation data)."""
    lr: float
    """Learning rate used in this epoch."""
    seconds: float
    """Wall time of the epoch."""


@dataclass
class FitResult:
    """What a training run produced."""

    history: list[EpochRecord]
    """One record per epoch."""
    best_epoch: int
    """Epoch whose weights were kept (lowest validation loss)."""
    best_val_loss: float
    """Its validation loss."""
    best_state: dict
    """Its weights (on CPU)."""
    failures: list[Failure] = field(default_factory=list)
    """Training or validation inputs that could not be read (each once)."""


def unpack(batch) -> tuple[torch.Tensor, torch.Tensor, list[Failure]]:
    """(inputs, targets, failures) from an image :class:`Batch` or an (inputs, targets) pair."""
    if isinstance(batch, Batch):
        return batch.inputs, batch.targets, batch.failures
    inputs, targets = batch
    return inputs, targets, []


def fit(
    model: nn.Module,
    train_loader: Iterable,
    val_loader: Iterable | None,
    *,
    epochs: int,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    runtime: Runtime,
    progress: ProgressReporter | None = None,
    history_path: Path | None = None,
    label: str = "training",
) -> FitResult:
    """Train for ``epochs`` and keep the weights with the lowest validation loss."""
    progress = or_null(progress)
    scaler = torch.amp.GradScaler(enabled=runtime.amp_dtype == torch.float16)
    history: list[EpochRecord] = []
    failures: dict[str, Failure] = {}
    best = (math.inf, 0, _cpu_state(model))
    progress.start("epochs", epochs, label)
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        train_loss, train_acc = _train_epoch(
            model, train_loader, optimizer, scaler, loss_fn, runtime, progress, failures, epoch
        )
        if val_loader is not None:
            val_loss, val_acc = evaluate_loss(model, val_loader, loss_fn, runtime, failures)
        else:
            val_loss, val_acc = math.nan, math.nan
        if scheduler is not None:
            scheduler.step()
        # Without validation data the training loss decides which weights to keep.
        criterion = val_loss if not math.isnan(val_loss) else train_loss
        if criterion < best[0]:
            best = (criterion, epoch, _cpu_state(model))
        record = EpochRecord(
            epoch, train_loss, train_acc, val_loss, val_acc, lr, time.perf_counter() - started
        )
        history.append(record)
        if history_path is not None:
            write_history(history, history_path)
        progress.advance("epochs", 1, val_loss=val_loss, val_acc=val_acc)
    progress.finish("epochs")
    return FitResult(history, best[1], best[0], best[2], list(failures.values()))


def _train_epoch(model, loader, optimizer, scaler, loss_fn, runtime, progress, failures, epoch):
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    progress.start("batches", _length(loader), f"epoch {epoch}")
    for batch in loader:
        inputs, targets, batch_failures = unpack(batch)
        _remember(failures, batch_failures)
        if len(targets) == 0:
            progress.advance("batches")
            continue
        inputs = runtime.to_device(inputs)
        targets = targets.to(runtime.device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with runtime.autocast():
            logits = model(inputs)
            loss = loss_fn(logits.float(), targets)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        total_loss += loss.item() * len(targets)
        correct += (logits.argmax(1) == targets).sum().item()
        seen += len(targets)
        progress.advance("batches", 1, loss=total_loss / seen, acc=correct / seen)
    progress.finish("batches")
    return (total_loss / seen, correct / seen) if seen else (math.nan, math.nan)


def evaluate_loss(model, loader, loss_fn, runtime, failures=None) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` over ``loader`` in eval mode."""
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    with torch.inference_mode():
        for batch in loader:
            inputs, targets, batch_failures = unpack(batch)
            if failures is not None:
                _remember(failures, batch_failures)
            if len(targets) == 0:
                continue
            inputs = runtime.to_device(inputs)
            targets = targets.to(runtime.device, non_blocking=True)
            with runtime.autocast():
                logits = model(inputs)
            total_loss += loss_fn(logits.float(), targets).item() * len(targets)
            correct += (logits.argmax(1) == targets).sum().item()
            seen += len(targets)
    return (total_loss / seen, correct / seen) if seen else (math.nan, math.nan)


def write_history(history: list[EpochRecord], path: Path) -> None:
    """Write the per-epoch history as JSON lines (rewritten whole, atomically)."""
    with atomic_write(path) as handle:
        for record in history:
            handle.write(json.dumps(_finite(asdict(record))) + "\n")


def _finite(record: dict) -> dict:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in record.items()}


def _cpu_state(model: nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _remember(failures: dict[str, Failure], batch_failures: list[Failure]) -> None:
    for failure in batch_failures:
        failures.setdefault(failure.source, failure)


def _length(loader) -> int | None:
    try:
        return len(loader)
    except TypeError:
        return None
