"""The training loop shared by every trainer (:mod:`dfx.engine.training` starts a run)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from dfx import distributed
from dfx.atomic import atomic_write
from dfx.data.dataset import Failure, unpack
from dfx.engine.device import Placement
from dfx.engine.losses import loss_weight, summed_loss
from dfx.engine.train_state import (
    TrainState,
    capture_rng,
    load_resume_state,
    restore_training,
    save_state,
)
from dfx.errors import TrainingInterrupted
from dfx.progress import ProgressReporter, or_null


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


def fit(
    model: nn.Module,
    train_loader: Iterable,
    val_loader: Iterable | None,
    *,
    epochs: int,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    loss_fn: nn.CrossEntropyLoss,
    placement: Placement,
    progress: ProgressReporter | None = None,
    history_path: Path | None = None,
    label: str = "training",
    state_path: Path | None = None,
    resume: bool = False,
    config: dict | None = None,
) -> FitResult:
    """Train for ``epochs`` and keep the weights with the lowest validation loss.

    With ``state_path``, everything needed to continue (weights, optimizer, scheduler,
    gradient scaler, random generators, best-so-far, history, ``config``) is written there
    atomically after every epoch; ``resume=True`` continues from that file, after checking
    that ``config`` matches. The shuffle order of a loader with ``set_epoch`` (or whose
    sampler has it) depends on (seed, epoch) only, so a resumed run repeats an
    uninterrupted one exactly. Ctrl-C raises :class:`TrainingInterrupted`.

    In a data-parallel run (:mod:`dfx.distributed`) the loaders yield this process's share,
    ``model`` trains inside DistributedDataParallel, the epoch's figures and unreadable
    inputs are combined over all processes, and rank 0 alone writes the history and state.
    """
    progress = or_null(progress)
    config = dict(config or {})
    scaler = torch.amp.GradScaler(
        placement.device.type, enabled=placement.amp_dtype == torch.float16
    )
    history: list[EpochRecord] = []
    failures: dict[str, Failure] = {}
    best = (math.inf, 0, _cpu_state(model))
    done = 0
    if resume:
        state = load_resume_state(state_path, config, epochs)
        restore_training(state, model, optimizer, scheduler, scaler)
        history = [EpochRecord(**record) for record in state.history]
        failures = {f["source"]: Failure(**f) for f in state.failures}
        best = (state.best_criterion, state.best_epoch, state.best_state)
        done = state.epoch
    trained = distributed.wrap_for_training(model, placement.device)
    spare = _Spare()
    writes = distributed.is_main()
    progress.start("epochs", epochs, label)
    if done:
        progress.advance("epochs", done)
        progress.notice(f"{label}: resuming after epoch {done} of {epochs} from {state_path}")
    try:
        for epoch in range(done + 1, epochs + 1):
            started = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]
            _set_epoch(train_loader, epoch)
            train_loss, train_acc = _train_epoch(
                trained,
                train_loader,
                optimizer,
                scaler,
                loss_fn,
                placement,
                progress,
                failures,
                epoch,
                spare,
            )
            # The last step left each process its own BatchNorm statistics: take rank 0's,
            # the ones it saves, so that every process validates the same model.
            distributed.broadcast_buffers(model)
            if val_loader is not None:
                val_loss, val_acc = evaluate_loss(model, val_loader, loss_fn, placement, failures)
            else:
                val_loss, val_acc = math.nan, math.nan
            if scheduler is not None:
                scheduler.step()
            # Without validation data the training loss decides which weights to keep.
            criterion = val_loss if not math.isnan(val_loss) else train_loss
            if criterion < best[0]:
                best = (criterion, epoch, _cpu_state(model))
            _merge_across_processes(failures)
            record = EpochRecord(
                epoch, train_loss, train_acc, val_loss, val_acc, lr, time.perf_counter() - started
            )
            history.append(record)
            if history_path is not None and writes:
                write_history(history, history_path)
            if state_path is not None and writes:
                save_state(
                    TrainState(
                        epoch=epoch,
                        model=_cpu_state(model),
                        optimizer=optimizer.state_dict(),
                        scheduler=scheduler.state_dict() if scheduler is not None else None,
                        scaler=scaler.state_dict(),
                        rng=capture_rng(),
                        best_criterion=best[0],
                        best_epoch=best[1],
                        best_state=best[2],
                        history=[asdict(r) for r in history],
                        failures=[asdict(f) for f in failures.values()],
                        config=config,
                    ),
                    state_path,
                )
            done = epoch
            progress.advance("epochs", 1, val_loss=val_loss, val_acc=val_acc)
    except KeyboardInterrupt as interrupt:
        saved = state_path if done and state_path is not None else None
        raise TrainingInterrupted(label, done, saved) from interrupt
    progress.finish("epochs")
    return FitResult(history, best[1], best[0], best[2], list(failures.values()))


def _set_epoch(loader, epoch: int) -> None:
    for owner in (loader, getattr(loader, "sampler", None)):
        if hasattr(owner, "set_epoch"):
            owner.set_epoch(epoch)
            return


def _merge_across_processes(failures: dict[str, Failure]) -> None:
    if distributed.world_size() > 1:
        for shard in distributed.gather_objects(list(failures.values())):
            _remember(failures, shard)


def _mean_and_accuracy(total_loss: float, correct: float, seen: float) -> tuple[float, float]:
    """Mean loss and accuracy from sums, the sums taken over all processes."""
    total_loss, correct, seen = distributed.sum_across([total_loss, correct, seen])
    return (total_loss / seen, correct / seen) if seen else (math.nan, math.nan)


class _Spare:
    """One readable training input kept aside, for a process whose batch has none."""

    inputs: torch.Tensor | None = None
    targets: torch.Tensor | None = None

    def keep(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        if self.inputs is None:
            self.inputs, self.targets = inputs[:1].cpu().clone(), targets[:1].cpu().clone()

    def share(self, needed: bool) -> None:
        """Every process offers its spare; one that has none takes the first offered."""
        offers = distributed.gather_objects(
            (self.inputs, self.targets) if self.inputs is not None else None
        )
        if needed:
            self.inputs, self.targets = next(offer for offer in offers if offer is not None)


def _train_epoch(
    model, loader, optimizer, scaler, loss_fn, placement, progress, failures, epoch, spare
):
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    progress.start("batches", _length(loader), f"epoch {epoch}")
    for batch in loader:
        inputs, targets, batch_failures = unpack(batch)
        _remember(failures, batch_failures)
        step = _plan_step(inputs, targets, loss_fn, spare)
        if step is None:  # no readable image in this step, on any process
            progress.advance("batches")
            continue
        inputs = placement.to_device(step.inputs)
        targets = step.targets.to(placement.device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with placement.autocast():
            logits = model(inputs)
            loss, batch_loss = step.loss(loss_fn, logits.float(), targets)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if step.readable:
            total_loss += batch_loss
            correct += (logits.argmax(1) == targets).sum().item()
            seen += len(targets)
        if seen:
            progress.advance("batches", 1, loss=total_loss / seen, acc=correct / seen)
        else:
            progress.advance("batches")
    progress.finish("batches")
    return _mean_and_accuracy(total_loss, correct, seen)


@dataclass
class _Step:
    """What one process trains on in one step, and how its loss is scaled."""

    inputs: torch.Tensor
    targets: torch.Tensor
    readable: bool
    """False: a spare input stands in for an all-unreadable batch, at weight 0."""
    scale: float | None = None
    """Multiplies the summed loss in a data-parallel run (None: one process, mean loss)."""
    total_count: float = 0.0
    total_weight: float = 0.0

    def loss(self, loss_fn, logits, targets) -> tuple[torch.Tensor, float]:
        """The loss to backpropagate, and this process's part of the epoch's loss sum."""
        if self.scale is None:
            loss = loss_fn(logits, targets)
            return loss, loss.item() * len(targets)
        summed = summed_loss(loss_fn, logits, targets)
        # This process's part of (step's weighted mean loss × step's image count), as a
        # single process adds it.
        part = summed.item() * self.total_count / self.total_weight if self.readable else 0.0
        return summed * self.scale, part


def _plan_step(inputs, targets, loss_fn, spare: _Spare) -> _Step | None:
    """This process's step, or None when no process has a readable image in it.

    DistributedDataParallel needs every process in every backward pass: one whose images
    were all unreadable steps with a spare input, counted with weight 0. Each loss is
    divided by the loss weight of all processes' readable images, so the averaged
    gradient is the single-process gradient of those images.
    """
    readable = len(targets) > 0
    processes = distributed.world_size()
    if processes == 1:
        return _Step(inputs, targets, True) if readable else None
    if readable:
        spare.keep(inputs, targets)
    lacks_spare = not readable and spare.inputs is None
    lacking, total_weight, total_count = distributed.sum_across(
        [float(lacks_spare), loss_weight(loss_fn, targets), len(targets)]
    )
    if total_weight == 0:  # no readable image anywhere: every process skips the step
        return None
    if lacking:
        spare.share(needed=lacks_spare)
    if not readable:
        inputs, targets = spare.inputs, spare.targets
    scale = processes / total_weight if readable else 0.0
    return _Step(inputs, targets, readable, scale, total_count, total_weight)


def evaluate_loss(model, loader, loss_fn, placement, failures=None) -> tuple[float, float]:
    """Loss and accuracy of ``model`` over all of ``loader`` (and all processes) in eval mode.

    The loss is ``loss_fn``'s (class-weighted) mean over the whole set, not a mean of batch
    means, so it does not depend on the batch size or the number of processes.
    """
    model.eval()
    total_loss, total_weight, correct, seen = 0.0, 0.0, 0, 0
    with torch.inference_mode():
        for batch in loader:
            inputs, targets, batch_failures = unpack(batch)
            if failures is not None:
                _remember(failures, batch_failures)
            if len(targets) == 0:
                continue
            inputs = placement.to_device(inputs)
            targets = targets.to(placement.device, non_blocking=True)
            with placement.autocast():
                logits = model(inputs)
            total_loss += summed_loss(loss_fn, logits.float(), targets).item()
            total_weight += loss_weight(loss_fn, targets)
            correct += (logits.argmax(1) == targets).sum().item()
            seen += len(targets)
    total_loss, total_weight, correct, seen = distributed.sum_across(
        [total_loss, total_weight, correct, seen]
    )
    return (total_loss / total_weight, correct / seen) if seen else (math.nan, math.nan)


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
