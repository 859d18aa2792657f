"""A tiny CNN for tests and the demo: same interface as a torchvision classifier."""

from __future__ import annotations

from torch import Tensor, nn


class TinyNet(nn.Module):
    """Four 3×3 conv blocks, global average pooling and a linear classifier ``fc``.

    The first block keeps full resolution because generator fingerprints live in the
    highest frequencies; a stride there would alias them away.
    """

    def __init__(self, num_classes: int = 1000, width: int = 64) -> None:
        super().__init__()
        channels = [3, width // 4, width // 2, width, width]
        strides = [1, 2, 2, 2]
        layers: list[nn.Module] = []
        for c_in, c_out, stride in zip(channels, channels[1:], strides):
            layers += [
                nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def tiny(weights: None = None, **kwargs) -> TinyNet:
    """Builder with torchvision's signature; the tiny net has no pretrained weights."""
    if weights is not None:
        raise ValueError("the tiny backbone has no pretrained weights")
    return TinyNet(**kwargs)
