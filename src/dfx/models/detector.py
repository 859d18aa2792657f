"""DeepFeatureX Net: three frozen class-specialised extractors and the fusion head."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dfx.classes import CLASSES
from dfx.errors import DfxError
from dfx.models.backbones import build_network, to_feature_extractor
from dfx.models.fusion import FusionHead


class DeepFeatureX(nn.Module):
    """Images (B, 3, H, W) → class logits (B, 3) in the order of :data:`dfx.classes.CLASSES`.

    The three extractors share one backbone architecture; their pooled features are
    stacked as channels in class order (dm, gan, real) and fused by the Conv1d head.
    """

    def __init__(self, backbone: str, image_size: int | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.extractors = nn.ModuleDict(
            {
                name: to_feature_extractor(build_network(backbone, "none", image_size), backbone)
                for name in CLASSES
            }
        )
        self.head = FusionHead(len(CLASSES))

    def features(self, images: Tensor) -> Tensor:
        """The stacked pooled features, shape (B, 3, D)."""
        return torch.stack([self.extractors[name](images) for name in CLASSES], dim=1)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images))


class StackedExtractors(nn.Module):
    """The three extractors alone, for computing fusion features: (B, 3, H, W) → (B, 3, D)."""

    def __init__(self, extractors: dict[str, nn.Module]) -> None:
        super().__init__()
        self.extractors = nn.ModuleDict({name: extractors[name] for name in CLASSES})

    def forward(self, images: Tensor) -> Tensor:
        return torch.stack([self.extractors[name](images) for name in CLASSES], dim=1)


class PerVariant(nn.Module):
    """Apply a network to (B, V, C, H, W) variant stacks: logits (B, V, K)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, stacks: Tensor) -> Tensor:
        batch, variants = stacks.shape[:2]
        logits = self.network(stacks.flatten(0, 1))
        return logits.view(batch, variants, -1)


ARCHITECTURES: tuple[str, ...] = ("deepfeaturex", "baseline")
"""Detector networks a ``dfx-detector`` file can hold: the fusion model, or one plain backbone."""


def build_detector_network(
    architecture: str, backbone: str, image_size: int | None = None
) -> nn.Module:
    """The untrained network of a detector file: images (B, 3, H, W) → class logits (B, 3)."""
    if architecture == "deepfeaturex":
        return DeepFeatureX(backbone, image_size)
    if architecture == "baseline":
        return build_network(backbone, "none", image_size, num_outputs=len(CLASSES))
    raise DfxError(
        f"unknown detector architecture {architecture!r}; this dfx knows "
        f"{', '.join(ARCHITECTURES)}."
    )
