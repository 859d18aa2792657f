"""Preprocessing that travels with a model (perturbations: :mod:`dfx.data.perturbations`).

Everything here is a plain picklable class (no lambdas), so DataLoader workers can use it
under the spawn start method (macOS, Windows).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from PIL import Image
from torchvision.transforms import functional as TF

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How an RGB image becomes the network's input tensor."""

    resize: int
    """Side of the square the image is resized to (aspect ratio not kept)."""
    crop: int | None = None
    """Side of the centre crop taken after resizing (ViT backbones), or None."""
    mean: tuple[float, float, float] = IMAGENET_MEAN
    """Per-channel mean subtracted after scaling to [0, 1]."""
    std: tuple[float, float, float] = IMAGENET_STD
    """Per-channel standard deviation divided by."""

    @property
    def input_size(self) -> int:
        """Side of the square tensor the network receives."""
        return self.crop or self.resize

    def to_dict(self) -> dict:
        """Plain-data form stored in model files."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        """Inverse of :meth:`to_dict`."""
        return cls(
            resize=int(data["resize"]),
            crop=None if data.get("crop") is None else int(data["crop"]),
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
        )

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = TF.resize(image, [self.resize, self.resize], antialias=True)
        if self.crop is not None:
            image = TF.center_crop(image, [self.crop, self.crop])
        tensor = TF.pil_to_tensor(image).float().div_(255.0)
        return TF.normalize(tensor, list(self.mean), list(self.std))
