"""The training configurations and their defaults, declared once (the official release's).

Torch-free, so the command line reads its option defaults from here without loading torch.
A config describes one run; model and resume-state files keep it as ``asdict(config)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from dfx.limits import DEFAULT_MAX_PIXELS


@dataclass
class TrainConfig:
    """Optimisation settings shared by every trainer (official defaults)."""

    epochs: int = 50
    """Training epochs."""
    batch_size: int = 32
    """Samples per training step (under torchrun: the global batch of all processes)."""
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
    """DataLoader worker processes (None: one less than the usable CPUs, at most 16)."""
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    """Images with more pixels are skipped as possible decompression bombs (None: no limit)."""


@dataclass
class BackboneTrainConfig(TrainConfig):
    """Settings of training a whole backbone on images (base models and baselines)."""

    backbone: str = "densenet121"
    """Backbone registry name."""
    weights: str = "imagenet"
    """Initial weights: imagenet, none, or a state-dict file."""
    image_size: int | None = None
    """Input side override (None: the backbone's default, 256)."""
    eval_batch_size: int = 64
    """Images per step when measuring metrics after training."""


@dataclass
class BaseTrainConfig(BackboneTrainConfig):
    """Settings of base-model training."""

    negative_fraction: float = 0.1
    """Share of the training set drawn from the other two classes (paper: 90:10)."""


@dataclass
class BaselineTrainConfig(BackboneTrainConfig):
    """Settings of baseline training (one backbone on the three classes)."""


@dataclass
class FusionTrainConfig(TrainConfig):
    """Settings of fusion-head training."""

    extract_batch_size: int = 64
    """Images per step during feature extraction."""
    compile: bool = False
    """Compile the fusion head with torch.compile (it runs every epoch; extraction runs once)."""


def demo_configs(
    *,
    image_size: int,
    base_epochs: int,
    fusion_epochs: int,
    seed: int = 0,
    device: str = "auto",
    base_batch_size: int = TrainConfig.batch_size,
) -> tuple[BaseTrainConfig, FusionTrainConfig]:
    """The scaled-down recipe of ``dfx demo`` and the tests: a tiny backbone from scratch,
    small images, lr 1e-3, no loader workers."""
    base = BaseTrainConfig(
        backbone="tiny",
        weights="none",
        image_size=image_size,
        epochs=base_epochs,
        lr=1e-3,
        batch_size=base_batch_size,
        seed=seed,
        device=device,
        workers=0,
    )
    fusion = FusionTrainConfig(epochs=fusion_epochs, lr=1e-3, seed=seed, device=device, workers=0)
    return base, fusion
