"""The DeepFeatureX fusion head, layer for layer as in the official release."""

from __future__ import annotations

from torch import Tensor, nn

# (in, out, kernel, stride) of the five Conv1d layers; padding is 1 throughout. The paper's
# prose says stride 1 everywhere; the released code, which produced its numbers, uses these.
CONV_LAYERS: tuple[tuple[int, int, int, int], ...] = (
    (3, 16, 7, 2),
    (16, 64, 5, 2),
    (64, 256, 3, 1),
    (256, 512, 3, 1),
    (512, 1024, 3, 1),
)


class FusionHead(nn.Module):
    """Conv1d stack over the (B, 3, D) stacked features of the three base models.

    ``convs`` holds conv, ReLU, BatchNorm four times (indices 0–11), then conv and ReLU
    (12–13), matching the official state-dict keys; ``classifier.0`` is the 1024→3 layer.
    """

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for position, (c_in, c_out, kernel, stride) in enumerate(CONV_LAYERS):
            layers += [nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=1), nn.ReLU()]
            if position < len(CONV_LAYERS) - 1:
                layers.append(nn.BatchNorm1d(c_out))
        self.convs = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.classifier = nn.Sequential(nn.Linear(CONV_LAYERS[-1][1], num_classes))

    def forward(self, features: Tensor) -> Tensor:
        return self.classifier(self.pool(self.convs(features)).flatten(1))


def min_feature_dim() -> int:
    """Smallest feature length D for which every conv layer still has an output."""
    for dim in range(1, 64):
        length = dim
        for _, _, kernel, stride in CONV_LAYERS:
            length = (length + 2 - kernel) // stride + 1
        if length >= 1:
            return dim
    raise AssertionError("unreachable")
