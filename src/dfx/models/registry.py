"""The backbone registry's facts: names, feature sizes, inputs, torchvision names.

Torch-free, so ``dfx backbones`` prints its table without loading torch; the networks
themselves are built in :mod:`dfx.models.backbones`, and how a detector of each runs by
default (batch sizes, CPU tuning, the backend) is in :mod:`dfx.models.inference_settings`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from dfx.errors import DfxError

WEIGHT_CHOICES = ("imagenet", "none")
"""Values of ``--weights`` besides a file path."""


@dataclass(frozen=True)
class BackboneSpec:
    """Everything dfx needs to know about one backbone."""

    name: str
    """The name users type (``--backbone``)."""
    torchvision_name: str | None
    """torchvision's model name, or None for dfx's own networks."""
    feature_dim: int
    """Length D of the pooled feature vector that feeds the final linear layer."""
    classifier: str
    """Dotted path of the final linear layer inside the network."""
    attribution_layer: str
    """Dotted path of the module whose output is the last spatial feature map (``dfx explain``)."""
    image_size: int = 256
    """Default side the image is resized to."""
    vit: bool = False
    """ViT backbones centre-crop to 224 after resizing and fix the input size at build time.

    Their attribution layer outputs tokens (class token first, then the patch grid row by row).
    """

    def input_sides(self, image_size: int | None = None) -> tuple[int, int | None]:
        """(resize, centre crop or None) for an input of ``image_size`` (default when None)."""
        if self.vit:
            # Keep the paper's 256 → 224 resize-then-crop proportion at any size.
            crop = image_size or 224
            return round(crop * 256 / 224), crop
        return image_size or self.image_size, None

    def preprocessing(self, image_size: int | None = None):
        """The :class:`~dfx.data.transforms.Preprocessing` for an input of ``image_size``."""
        from dfx.data.transforms import Preprocessing

        resize, crop = self.input_sides(image_size)
        return Preprocessing(resize=resize, crop=crop)

    def to_dict(self) -> dict:
        """What ``dfx backbones --json`` lists of this backbone (beside its inference settings)."""
        resize, crop = self.input_sides()
        return {
            "name": self.name,
            "feature_dim": self.feature_dim,
            "resize": resize,
            "crop": crop,
            "imagenet_weights": self.torchvision_name is not None,
            "attribution_layer": self.attribution_layer,
        }

    def builder(self) -> Callable:
        """The constructor with torchvision's ``(weights=..., **kwargs)`` signature."""
        if self.torchvision_name is None:
            from dfx.models.tiny import tiny

            return tiny
        import torchvision

        return functools.partial(torchvision.models.get_model, self.torchvision_name)


def _spec(
    name: str, dim: int, classifier: str, layer: str, tv: str | None = None, **kw
) -> BackboneSpec:
    return BackboneSpec(name, tv or name, dim, classifier, layer, **kw)


# The last block's input norm: after the last block only the class token reaches the head,
# so the patch tokens of the block's own output carry no gradient.
_VIT_LAYER = "encoder.layers.encoder_layer_11.ln_1"

REGISTRY: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        _spec("densenet121", 1024, "classifier", "features"),
        _spec("densenet161", 2208, "classifier", "features"),
        _spec("densenet169", 1664, "classifier", "features"),
        _spec("densenet201", 1920, "classifier", "features"),
        _spec("efficientnet_b0", 1280, "classifier.1", "features"),
        _spec("efficientnet_b4", 1792, "classifier.1", "features"),
        _spec("resnet18", 512, "fc", "layer4"),
        _spec("resnet34", 512, "fc", "layer4"),
        _spec("resnet50", 2048, "fc", "layer4"),
        _spec("resnet101", 2048, "fc", "layer4"),
        _spec("resnet152", 2048, "fc", "layer4"),
        _spec("resnext101", 2048, "fc", "layer4", "resnext101_32x8d"),
        _spec("vit_b_16", 768, "heads.head", _VIT_LAYER, vit=True),
        _spec("vit_b_32", 768, "heads.head", _VIT_LAYER, vit=True),
        BackboneSpec("tiny", None, 64, "fc", "features", image_size=64),
    )
}
"""All selectable backbones: the paper's fourteen and ``tiny`` for tests and demos."""


def get_spec(name: str) -> BackboneSpec:
    """The registry entry for ``name``; an unknown name fails listing the valid ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise DfxError(
            f"unknown backbone {name!r}; choose one of: {', '.join(REGISTRY)}."
        ) from None
