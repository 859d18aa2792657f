"""Train the fusion head on cached features of the three frozen base models."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dfx.checkpoint import BASE_FORMAT, ModelFile, load_model_file, load_weights
from dfx.classes import CLASSES, class_index
from dfx.data.dataset import ImageDataset, make_loader
from dfx.data.manifest import Manifest, content_digests
from dfx.engine.batches import TensorBatches
from dfx.engine.configs import FusionTrainConfig
from dfx.engine.device import Placement
from dfx.engine.inference import run_network
from dfx.engine.losses import class_weights
from dfx.engine.train_state import require_state
from dfx.engine.training import TrainResult, calibrate, class_counts, rows_digest, start_run
from dfx.errors import DfxError
from dfx.fingerprint import file_digest
from dfx.models.backbones import build_network, get_spec, to_feature_extractor
from dfx.models.detector import StackedExtractors
from dfx.models.fusion import FusionHead, min_feature_dim
from dfx.progress import ProgressReporter, or_null


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
    placement: Placement,
    *,
    batch_size: int,
    workers: int,
    progress: ProgressReporter | None = None,
):
    """The (N, 3, D) stacked features of every readable image, computed once in eval mode."""
    loader = make_loader(dataset, batch_size, workers=workers, pin_memory=placement.is_cuda)
    return run_network(
        extractors, loader, placement, progress=progress, description="extract features"
    )


def train_fusion(
    manifest: Manifest,
    base_paths: dict[str, Path],
    config: FusionTrainConfig,
    *,
    out: str | Path,
    progress: ProgressReporter | None = None,
    resume: bool = False,
) -> TrainResult:
    """Freeze the base models, cache their features, train the head, write the detector ``out``.

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
    run = start_run(config, "fusion", out, config.compile)
    placement = run.placement

    rows = manifest.select("fusion")
    missing = [name for name in CLASSES if not any(r.label == name for r in rows)]
    if missing:
        raise DfxError(f"the manifest's fusion role has no {', '.join(missing)} images.")
    if resume:  # say so now, not after a long extraction
        require_state(run.paths.state)
    # Compiling the backbones would cost more than the one pass over the images it speeds up.
    extractors = dataclasses.replace(placement, compile=False).prepare(
        StackedExtractors(assemble_extractors(files))
    )
    extractors.requires_grad_(False)
    dataset = ImageDataset(
        [manifest.absolute(r) for r in rows],
        [class_index(r.label) for r in rows],
        reference.preprocessing,
        max_pixels=config.max_pixels,
    )
    extraction_started = time.perf_counter()
    outputs = extract_features(
        extractors,
        dataset,
        placement,
        batch_size=config.extract_batch_size,
        workers=run.workers,
        progress=progress,
    )
    extraction_seconds = time.perf_counter() - extraction_started

    positions = list(range(len(outputs.targets)))
    labels = outputs.targets.tolist()
    train_pos, val_pos = run.holdout(positions, lambda i: labels[i])
    features = outputs.values.to(placement.device)
    targets = outputs.targets.to(placement.device)
    train_counts = np.bincount(np.asarray(labels)[train_pos], minlength=len(CLASSES))
    weights = class_weights(train_counts, "fusion").to(placement.device)

    def batches(chosen: list[int], shuffle: bool) -> TensorBatches:
        index = torch.tensor(chosen, dtype=torch.long, device=placement.device)
        batch_size = run.batch_size if shuffle else config.batch_size
        return TensorBatches(
            features[index], targets[index], batch_size, shuffle=shuffle, seed=config.seed
        )

    head = placement.prepare(FusionHead(len(CLASSES)))
    training_started = time.perf_counter()
    result = run.fit(
        head,
        batches(train_pos, True),
        batches(val_pos, False) if val_pos else None,
        loss_fn=nn.CrossEntropyLoss(weight=weights),
        label="train fusion head",
        progress=progress,
        resume=resume,
        identity={
            "base_models": {name: file_digest(base_paths[name]) for name in CLASSES},
            "rows": rows_digest(rows[i].path for i in outputs.indices.tolist()),
        },
    )
    training_seconds = time.perf_counter() - training_started
    chosen = val_pos or train_pos
    calibrated = calibrate(
        targets[chosen], _head_logits(head, features[chosen], placement), held_out=bool(val_pos)
    )

    # The detector's state dict is the extractors' and the head's, under DeepFeatureX's names.
    detector_state = {f"head.{k}": v for k, v in result.best_state.items()}
    detector_state.update(extractors.state_dict())
    return run.finish_detector(
        result,
        class_counts(len(train_pos), len(val_pos), train_counts),
        outputs.failures + result.failures,
        calibrated,
        more_metrics={"base": {name: files[name].metrics for name in CLASSES}},
        details={"extraction_seconds": extraction_seconds, "training_seconds": training_seconds},
        backbone=spec.name,
        preprocessing=reference.preprocessing,
        state_dict=detector_state,
        config={"fusion": asdict(config), "base": {name: files[name].config for name in CLASSES}},
        trained_on=content_digests(manifest, manifest.select("base") + rows),
    )


def _head_logits(head: nn.Module, features: torch.Tensor, placement: Placement) -> torch.Tensor:
    """The kept head's logits of some cached features, in eval mode."""
    head.eval()
    with torch.inference_mode(), placement.autocast():
        return head(features)
