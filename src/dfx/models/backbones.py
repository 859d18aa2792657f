"""The backbone registry: name → builder, feature size, preprocessing and weights.

A base model is a backbone whose final linear layer is a 2-way classifier; the feature
extractor is the same network with that layer replaced by the identity.
"""

from __future__ import annotations

import contextlib
import io
import urllib.error
from pathlib import Path

import torch
from torch import nn

from dfx.checkpoint import safe_load
from dfx.errors import DfxError
from dfx.models.registry import (  # noqa: F401  (the registry is read from here too)
    REGISTRY,
    WEIGHT_CHOICES,
    BackboneSpec,
    get_spec,
)


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
            raise DfxError(f"{name} ImageNet weights need `image_size` 224, got {size}.")
        if size % int(name.rsplit("_", 1)[1]):
            raise DfxError(f"{name} needs an `image_size` divisible by its patch size.")
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
        raise DfxError(f"backbone {spec.name!r} has no ImageNet weights; use `weights` none.")
    # IMAGENET1K_V1: the weights torchvision's old ``pretrained=True`` gave the official code.
    return torchvision.models.get_model_weights(spec.torchvision_name).IMAGENET1K_V1


def _with_imagenet_weights(spec: BackboneSpec) -> nn.Module:
    weights = _imagenet_weights(spec)
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    filename = weights.url.rsplit("/", 1)[-1]
    try:
        # torch.hub writes 'Downloading: "URL" to FILE' on stdout, the results' stream, and a
        # progress bar on stderr; the library prints nothing, and failures are told below.
        with contextlib.redirect_stdout(io.StringIO()):
            return spec.builder()(weights=weights, progress=False)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as error:
        if (checkpoints / filename).is_file():
            raise DfxError(
                f"ImageNet weights {checkpoints / filename} could not be read ({error}); "
                "delete the file so that it is downloaded again."
            ) from error
        raise DfxError(
            f"ImageNet weights for {spec.name} are not cached and could not be downloaded: "
            f"put {filename} (from {weights.url}) in {checkpoints}/ "
            "(or set TORCH_HOME), or use `weights` none."
        ) from error


def _load_weights_file(network: nn.Module, spec: BackboneSpec, path: Path) -> None:
    choices = "use imagenet, none or a state-dict file"
    if not path.is_file():
        raise DfxError(f"`weights` {path}: no such file; {choices}.")
    loaded = safe_load(path, "a PyTorch state dict", hint=f"; `weights`: {choices}")
    if isinstance(loaded, dict) and loaded.get("format") == "dfx-base":
        loaded = loaded["state_dict"]
    elif isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise DfxError(f"`weights` {path} does not hold a state dict.")
    loaded = {k.removeprefix("module."): v for k, v in loaded.items()}
    head = spec.classifier + "."
    loaded = {k: v for k, v in loaded.items() if not k.startswith(head)}
    missing, unexpected = network.load_state_dict(loaded, strict=False)
    missing = [k for k in missing if not k.startswith(head)]
    if missing or unexpected:
        names = ", ".join((missing + unexpected)[:4])
        raise DfxError(
            f"`weights` {path} does not fit backbone {spec.name}: "
            f"{len(missing)} missing and {len(unexpected)} unexpected keys (e.g. {names})."
        )
