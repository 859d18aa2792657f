"""Train the fusion head on cached features of the three frozen base models."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dfx.checkpoint import (
    BASE_FORMAT,
    DETECTOR_FORMAT,
    ModelFile,
    load_model_file,
    load_weights,
    save_model_file,
)
from dfx.classes import CLASSES, class_index
from dfx.data.dataset import Failure, ImageDataset, failure_records, make_loader
from dfx.data.manifest import Manifest, content_digests
from dfx.engine.batches import TensorBatches
from dfx.engine.configs import FusionTrainConfig
from dfx.engine.device import Placement
from dfx.engine.inference import run_network
from dfx.engine.loop import fit, make_optimizer, rows_digest, start_training
from dfx.engine.losses import class_weights
from dfx.engine.sampling import holdout_split
from dfx.engine.train_state import require_state
from dfx.errors import DfxError
from dfx.fingerprint import file_digest
from dfx.metrics import validation_report
from dfx.models.backbones import build_network, get_spec, to_feature_extractor
from dfx.models.detector import StackedExtractors
from dfx.models.fusion import FusionHead, min_feature_dim
from dfx.progress import ProgressReporter, or_null


@dataclass
class FusionTrainResult:
    """What training the fusion head produced."""

    path: Path
    """The detector file written."""
    history_path: Path
    """The per-epoch history (JSON lines)."""
    counts: dict[str, int]
    """Numbers of feature vectors: train, val, and per class of train."""
    best_epoch: int
    """Epoch whose weights were kept."""
    validation: dict
    """3-class and binary metrics of the kept weights on the validation features."""
    extraction_seconds: float
    """Wall time of the one feature-extraction pass."""
    training_seconds: float
    """Wall time of head training over the cached features."""
    failures: list[Failure] = field(default_factory=list)
    """Images that could not be read and were skipped."""

    def to_dict(self) -> dict:
        """The ``train-fusion --json`` document."""
        return {
            "path": str(self.path),
            "history": str(self.history_path),
            "best_epoch": self.best_epoch,
            "counts": self.counts,
            "validation": self.validation,
            "extraction_seconds": self.extraction_seconds,
            "training_seconds": self.training_seconds,
            "failures": failure_records(self.failures),
        }


def load_base_models(paths: dict[str, Path]) -> dict[str, ModelFile]:
    """Read the three base-model files and check that they belong together."""
    files = {name: load_model_file(paths[name], BASE_FORMAT) for name in CLASSES}
    for name, model_file in files.items():
        if model_file.target != name:
            raise DfxError(
                f"{paths[name]} is the base model for {model_file.target!r}, not {name!r}."
            )
    backbones = {m.backbone for m in files.values()}
    preprocessings = {m.preprocessing for m in files.values()}
    if len(backbones) > 1 or len(preprocessings) > 1:
        raise DfxError(
            "the three base models must share one backbone and input size; got "
            + ", ".join(
                f"{n}: {m.backbone} {m.preprocessing.input_size}px" for n, m in files.items()
            )
            + "."
        )
    return files


def assemble_extractors(files: dict[str, ModelFile]) -> dict[str, nn.Module]:
    """Feature extractors (final linear layer removed) with the base models' weights."""
    extractors = {}
    for name, model_file in files.items():
        with torch.device("meta"):
            network = build_network(
                model_file.backbone, "none", model_file.preprocessing.input_size
            )
        load_weights(
            network, model_file.state_dict, f"the {name} base model's {model_file.backbone} weights"
        )
        extractors[name] = to_feature_extractor(network, model_file.backbone)
    return extractors


def extract_features(
    extractors: nn.Module,
    dataset: ImageDataset,
    runtime: Placement,
    *,
    batch_size: int,
    workers: int,
    progress: ProgressReporter | None = None,
):
    """The (N, 3, D) stacked features of every readable image, computed once in eval mode."""
    loader = make_loader(dataset, batch_size, workers=workers, pin_memory=runtime.is_cuda)
    return run_network(
        extractors, loader, runtime, progress=progress, description="extract features"
    )


def train_fusion(
    manifest: Manifest,
    base_paths: dict[str, Path],
    config: FusionTrainConfig,
    out: str | Path,
    progress: ProgressReporter | None = None,
    resume: bool = False,
) -> FusionTrainResult:
    """Freeze the base models, cache their features, train the head, write the detector.

    The head's state after each epoch goes to ``<out>.state.pt`` (beside ``out``);
    ``resume=True`` continues from it. The features are computed again on resumption
    (they are deterministic in eval mode), not stored.
    """
    progress = or_null(progress)
    files = load_base_models(base_paths)
    reference = files[CLASSES[0]]
    spec = get_spec(reference.backbone)
    if spec.feature_dim < min_feature_dim():
        raise DfxError(f"backbone {spec.name} has too few features for the fusion head.")
    runtime, workers, train_batch_size = start_training(config, config.compile)

    rows = manifest.select("fusion")
    missing = [name for name in CLASSES if not any(r.label == name for r in rows)]
    if missing:
        raise DfxError(f"the manifest's fusion split has no {', '.join(missing)} images.")
    state_path = Path(out).with_suffix(".state.pt")
    if resume:  # say so now, not after a long extraction
        require_state(state_path)
    # Compiling the backbones would cost more than the one pass over the images it speeds up.
    extractors = dataclasses.replace(runtime, compile=False).prepare(
        StackedExtractors(assemble_extractors(files))
    )
    extractors.requires_grad_(False)
    dataset = ImageDataset(
        [manifest.absolute(r) for r in rows],
        [class_index(r.label) for r in rows],
        reference.preprocessing,
        max_pixels=config.max_pixels,
    )
    started = time.perf_counter()
    outputs = extract_features(
        extractors,
        dataset,
        runtime,
        batch_size=config.extract_batch_size,
        workers=workers,
        progress=progress,
    )
    extraction_seconds = time.perf_counter() - started

    # Salted apart from the base models' draws (salts 0-2) and the baselines' (7).
    rng = np.random.default_rng([config.seed, 3])
    positions = list(range(len(outputs.targets)))
    labels = outputs.targets.tolist()
    train_pos, val_pos = holdout_split(positions, lambda i: labels[i], config.val_fraction, rng)
    features = outputs.values.to(runtime.device)
    targets = outputs.targets.to(runtime.device)
    train_counts = np.bincount(np.asarray(labels)[train_pos], minlength=len(CLASSES))
    weights = class_weights(train_counts, "fusion").to(runtime.device)

    def batches(chosen: list[int], shuffle: bool) -> TensorBatches:
        index = torch.tensor(chosen, dtype=torch.long, device=runtime.device)
        batch_size = train_batch_size if shuffle else config.batch_size
        return TensorBatches(
            features[index], targets[index], batch_size, shuffle=shuffle, seed=config.seed
        )

    head = runtime.prepare(FusionHead(len(CLASSES)))
    optimizer, scheduler = make_optimizer(head.parameters(), config)
    out = Path(out)
    history_path = out.with_suffix(".history.jsonl")
    started = time.perf_counter()
    result = fit(
        head,
        batches(train_pos, True),
        batches(val_pos, False) if val_pos else None,
        epochs=config.epochs,
        optimizer=optimizer,
        scheduler=scheduler,
        loss_fn=nn.CrossEntropyLoss(weight=weights),
        runtime=runtime,
        progress=progress,
        history_path=history_path,
        label="train fusion head",
        state_path=state_path,
        resume=resume,
        config=asdict(config)
        | {
            "base_models": {name: file_digest(base_paths[name]) for name in CLASSES},
            "rows": rows_digest(rows[i].path for i in outputs.indices.tolist()),
        },
    )
    training_seconds = time.perf_counter() - started
    head.load_state_dict(result.best_state)
    validation, calibration = _validation_metrics(
        head, features, targets, val_pos or train_pos, runtime, held_out=bool(val_pos)
    )

    # The detector's state dict is the extractors' and the head's, under DeepFeatureX's names.
    detector_state = {f"head.{k}": v for k, v in result.best_state.items()}
    detector_state.update(extractors.state_dict())
    counts = {
        "train": len(train_pos),
        "val": len(val_pos),
        **{f"train_{n}": int(c) for n, c in zip(CLASSES, train_counts)},
    }
    model_file = ModelFile(
        format=DETECTOR_FORMAT,
        backbone=spec.name,
        classes=list(CLASSES),
        preprocessing=reference.preprocessing,
        state_dict=detector_state,
        config={"fusion": asdict(config), "base": {name: files[name].config for name in CLASSES}},
        metrics={
            "fusion_validation": validation,
            "threshold": calibration.to_dict(),
            "best_epoch": result.best_epoch,
            "counts": counts,
            "base": {name: files[name].metrics for name in CLASSES},
        },
        trained_on=content_digests(manifest, manifest.select("base") + rows),
    )
    save_model_file(model_file, out)
    return FusionTrainResult(
        out,
        history_path,
        counts,
        result.best_epoch,
        validation,
        extraction_seconds,
        training_seconds,
        outputs.failures + result.failures,
    )


def _validation_metrics(head, features, targets, chosen, runtime, held_out: bool):
    """Metrics of the kept head on the validation features, and the threshold calibrated there."""
    head.eval()
    index = torch.tensor(chosen, dtype=torch.long, device=features.device)
    with torch.inference_mode(), runtime.autocast():
        probs = torch.softmax(head(features[index]).float(), dim=1).cpu().numpy()
    y_true = targets[index].cpu().numpy()
    return validation_report(y_true, probs, held_out)
