"""The backbone registry: name → builder, feature size, preprocessing and weights.

A base model is a backbone whose final linear layer is a 2-way classifier; the feature
extractor is the same network with that layer replaced by the identity.
"""

from __future__ import annotations

import functools
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dfx.checkpoint import safe_load
from dfx.data.transforms import Preprocessing
from dfx.errors import DfxError
from dfx.models.tiny import tiny

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

    def preprocessing(self, image_size: int | None = None) -> Preprocessing:
        """The preprocessing for an input of ``image_size`` (the default when None)."""
        size = image_size or self.image_size
        if self.vit:
            # Keep the paper's 256 → 224 resize-then-crop proportion at any size.
            crop = image_size or 224
            return Preprocessing(resize=round(crop * 256 / 224), crop=crop)
        return Preprocessing(resize=size)

    def builder(self) -> Callable[..., nn.Module]:
        """The constructor with torchvision's ``(weights=..., **kwargs)`` signature."""
        if self.torchvision_name is None:
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


def build_network(
    name: str, weights: str = "none", image_size: int | None = None, num_outputs: int = 2
) -> nn.Module:
    """A backbone whose final linear layer has ``num_outputs`` outputs.

    ``weights`` is ``imagenet`` (torchvision's weights and cache), ``none`` (random init) or a
    path to a state dict of the backbone (its classifier, if any, is not used).
    """
    spec = get_spec(name)
    kwargs = {}
    if spec.vit:
        size = spec.preprocessing(image_size).input_size
        if weights == "imagenet" and size != 224:
            raise DfxError(f"{name} ImageNet weights need --image-size 224, got {size}.")
        if size % int(name.rsplit("_", 1)[1]):
            raise DfxError(f"{name} needs --image-size divisible by its patch size.")
        if weights != "imagenet":
            kwargs["image_size"] = size
    if weights == "imagenet":
        network = _with_imagenet_weights(spec)
    else:
        network = spec.builder()(weights=None, **kwargs)
        if weights != "none":
            _load_weights_file(network, spec, Path(weights))
    set_module(network, spec.classifier, nn.Linear(spec.feature_dim, num_outputs))
    return network


def to_feature_extractor(network: nn.Module, name: str) -> nn.Module:
    """Remove the final linear layer in place so the network returns pooled features."""
    set_module(network, get_spec(name).classifier, nn.Identity())
    return network


def set_module(root: nn.Module, dotted: str, module: nn.Module) -> None:
    """Replace the sub-module at a dotted path such as ``classifier.1``."""
    *parents, last = dotted.split(".")
    owner = root
    for part in parents:
        owner = getattr(owner, part) if not part.isdigit() else owner[int(part)]
    if last.isdigit():
        owner[int(last)] = module
    else:
        setattr(owner, last, module)


def _imagenet_weights(spec: BackboneSpec):
    import torchvision

    if spec.torchvision_name is None:
        raise DfxError(f"backbone {spec.name!r} has no ImageNet weights; use --weights none.")
    # IMAGENET1K_V1: the weights torchvision's old ``pretrained=True`` gave the official code.
    return torchvision.models.get_model_weights(spec.torchvision_name).IMAGENET1K_V1


def _with_imagenet_weights(spec: BackboneSpec) -> nn.Module:
    weights = _imagenet_weights(spec)
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    filename = weights.url.rsplit("/", 1)[-1]
    try:
        return spec.builder()(weights=weights)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as error:
        if (checkpoints / filename).is_file():
            raise DfxError(
                f"ImageNet weights {checkpoints / filename} could not be read ({error}); "
                "delete the file so that it is downloaded again."
            ) from error
        raise DfxError(
            f"ImageNet weights for {spec.name} are not cached and could not be downloaded: "
            f"put {filename} (from {weights.url}) in {checkpoints}/ "
            "(or set TORCH_HOME), or use --weights none."
        ) from error


def _load_weights_file(network: nn.Module, spec: BackboneSpec, path: Path) -> None:
    choices = "use imagenet, none or a state-dict file"
    if not path.is_file():
        raise DfxError(f"--weights {path}: no such file; {choices}.")
    loaded = safe_load(path, "a PyTorch state dict", hint=f"; --weights: {choices}")
    if isinstance(loaded, dict) and loaded.get("format") == "dfx-base":
        loaded = loaded["state_dict"]
    elif isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise DfxError(f"--weights {path} does not hold a state dict.")
    loaded = {k.removeprefix("module."): v for k, v in loaded.items()}
    head = spec.classifier + "."
    loaded = {k: v for k, v in loaded.items() if not k.startswith(head)}
    missing, unexpected = network.load_state_dict(loaded, strict=False)
    missing = [k for k in missing if not k.startswith(head)]
    if missing or unexpected:
        names = ", ".join((missing + unexpected)[:4])
        raise DfxError(
            f"--weights {path} does not fit backbone {spec.name}: "
            f"{len(missing)} missing and {len(unexpected)} unexpected keys (e.g. {names})."
        )
