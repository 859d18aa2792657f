"""The whole DeepFeatureX training on a split manifest: three base models, then the fusion head."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dfx.classes import CLASSES
from dfx.data.manifest import Manifest
from dfx.engine.base_training import base_model_path, train_base
from dfx.engine.configs import BaseTrainConfig, FusionTrainConfig
from dfx.engine.fusion_training import train_fusion
from dfx.engine.training import TrainResult
from dfx.progress import ProgressReporter


@dataclass
class DetectorTraining:
    """What :func:`train_detector` produced."""

    base: dict[str, TrainResult]
    """The three base models, by class."""
    fusion: TrainResult
    """The fused detector."""


def train_detector(
    manifest: Manifest,
    out: str | Path,
    base_config: BaseTrainConfig,
    fusion_config: FusionTrainConfig,
    *,
    progress: ProgressReporter | None = None,
    on_base: Callable[[list[TrainResult]], None] | None = None,
) -> DetectorTraining:
    """Train the base models ``out/base/<class>.pt``, then the detector ``out/model.pt``.

    ``on_base`` receives the base models' results before the fusion head trains.
    """
    out = Path(out)
    base = {
        name: train_base(
            manifest, name, base_config, out=base_model_path(out / "base", name), progress=progress
        )
        for name in CLASSES
    }
    if on_base is not None:
        on_base(list(base.values()))
    fusion = train_fusion(
        manifest,
        {name: result.path for name, result in base.items()},
        fusion_config,
        out=out / "model.pt",
        progress=progress,
    )
    return DetectorTraining(base, fusion)
