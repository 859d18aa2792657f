"""Train one base model: a backbone specialised in "one class vs the others"."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from torch import nn
from torch.utils.data import DataLoader

from dfx.checkpoint import BASE_FORMAT, ModelFile, save_model_file
from dfx.classes import CLASSES, class_index
from dfx.data.dataset import Failure, ImageDataset, failure_records, make_loader
from dfx.data.manifest import Manifest, ManifestRow
from dfx.data.transforms import Preprocessing
from dfx.engine.configs import BackboneTrainConfig, BaseTrainConfig
from dfx.engine.device import Placement
from dfx.engine.inference import run_network
from dfx.engine.loop import fit, make_optimizer, rows_digest, start_training
from dfx.engine.sampling import holdout_split, sample_per_group
from dfx.errors import DfxError
from dfx.metrics import target_metrics
from dfx.models.backbones import build_network, get_spec
from dfx.progress import ProgressReporter, or_null


def row_loader(
    manifest: Manifest,
    target_of: Callable[[ManifestRow], int],
    preprocessing: Preprocessing,
    config: BackboneTrainConfig,
    runtime: Placement,
    workers: int,
) -> Callable[[list[ManifestRow], bool, int], DataLoader]:
    """A function making the DataLoader of some manifest rows: (rows, shuffle, batch size)."""

    def loader(rows: list[ManifestRow], shuffle: bool, batch_size: int) -> DataLoader:
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
            workers=workers,
            pin_memory=runtime.is_cuda,
            seed=config.seed,
        )

    return loader


@dataclass
class BaseTrainResult:
    """What training one base model produced."""

    target: str
    """The class the model specialises in."""
    path: Path
    """The base-model file written."""
    history_path: Path
    """The per-epoch history (JSON lines)."""
    counts: dict[str, int]
    """Numbers of images: positives, negatives, train, val, test."""
    best_epoch: int
    """Epoch whose weights were kept."""
    best_val_loss: float
    """Their validation loss."""
    test_metrics: dict | None
    """Table 1 metrics (target vs others) on the test images, or None without test rows."""
    seconds: float
    """Wall time."""
    failures: list[Failure] = field(default_factory=list)
    """Images that could not be read and were skipped."""

    def to_dict(self) -> dict:
        """One element of the ``models`` list of ``train-base --json``."""
        return {
            "target": self.target,
            "path": str(self.path),
            "history": str(self.history_path),
            "best_epoch": self.best_epoch,
            "best_val_loss": self.best_val_loss,
            "counts": self.counts,
            "test": self.test_metrics,
            "seconds": self.seconds,
            "failures": failure_records(self.failures),
        }


def check_target(target: str) -> str:
    """Validate a class name for ``--target``."""
    if target not in CLASSES:
        raise DfxError(f"target {target!r} is not one of {', '.join(CLASSES)} or all.")
    return target


def state_path_of(out_dir: str | Path, target: str) -> Path:
    """Where training the ``target`` base model keeps its resume state."""
    return Path(out_dir) / f"{target}.state.pt"


def select_base_rows(
    manifest: Manifest, target: str, negative_fraction: float, rng: np.random.Generator
) -> tuple[list[ManifestRow], list[ManifestRow]]:
    """All ``base`` images of the target class, and a small stratified share of the others."""
    if not 0 < negative_fraction < 1:
        raise DfxError("the negative fraction must lie strictly between 0 and 1.")
    rows = manifest.select("base")
    positives = [row for row in rows if row.label == target]
    others = [row for row in rows if row.label != target]
    if not positives or not others:
        raise DfxError(
            f"the manifest's base split has {len(positives)} {target} image(s) and "
            f"{len(others)} other image(s); training a {target} model needs both."
        )
    wanted = round(len(positives) * negative_fraction / (1 - negative_fraction))
    negatives = sample_per_group(others, lambda r: (r.label, r.generator), wanted, rng)
    return positives, negatives


def train_base(
    manifest: Manifest,
    target: str,
    config: BaseTrainConfig,
    out_dir: str | Path,
    progress: ProgressReporter | None = None,
    resume: bool = False,
) -> BaseTrainResult:
    """Train, keep the lowest-validation-loss weights, write ``out_dir/<target>.pt``.

    The state after each epoch goes to ``out_dir/<target>.state.pt``; ``resume=True``
    continues from it (see :func:`dfx.engine.loop.fit`).
    """
    started = time.perf_counter()
    progress = or_null(progress)
    check_target(target)
    spec = get_spec(config.backbone)
    preprocessing = spec.preprocessing(config.image_size)
    runtime, workers, train_batch_size = start_training(config)
    # Each trainer salts the seed differently (base models with their class index 0-2, the
    # fusion head 3, baselines 7), so their draws are independent yet fixed by --seed.
    rng = np.random.default_rng([config.seed, class_index(target)])

    positives, negatives = select_base_rows(manifest, target, config.negative_fraction, rng)
    train_rows, val_rows = holdout_split(
        positives + negatives, lambda r: r.label == target, config.val_fraction, rng
    )

    loader = row_loader(
        manifest, lambda r: int(r.label == target), preprocessing, config, runtime, workers
    )

    network = runtime.prepare(build_network(spec.name, config.weights, config.image_size))
    optimizer, scheduler = make_optimizer(network.parameters(), config)
    out_dir = Path(out_dir)
    history_path = out_dir / f"{target}.history.jsonl"
    progress.notice(
        f"{target} base model: {len(positives)} positives, {len(negatives)} negatives; "
        f"{len(train_rows)} train / {len(val_rows)} val; {spec.name} on {runtime.device}"
    )
    result = fit(
        network,
        loader(train_rows, True, train_batch_size),
        loader(val_rows, False, config.eval_batch_size) if val_rows else None,
        epochs=config.epochs,
        optimizer=optimizer,
        scheduler=scheduler,
        loss_fn=nn.CrossEntropyLoss(),
        runtime=runtime,
        progress=progress,
        history_path=history_path,
        label=f"train {target} base model",
        state_path=state_path_of(out_dir, target),
        resume=resume,
        config=asdict(config)
        | {"target": target, "rows": rows_digest(r.path for r in train_rows + val_rows)},
    )
    network.load_state_dict(result.best_state)

    test_rows = manifest.select("test")
    test_metrics = None
    failures = list(result.failures)
    if test_rows:
        outputs = run_network(
            network,
            loader(test_rows, False, config.eval_batch_size),
            runtime,
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
    path = save_model_file(model_file, out_dir / f"{target}.pt")
    return BaseTrainResult(
        target,
        path,
        history_path,
        counts,
        result.best_epoch,
        result.best_val_loss,
        test_metrics,
        time.perf_counter() - started,
        failures,
    )
