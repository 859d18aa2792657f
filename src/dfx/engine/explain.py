"""Where each base model finds its evidence, and how much each drove the verdict.

For every image and a target class (by default the predicted one):

* a heatmap per specialist (the dm, gan and real base models): a class activation map of
  the fused detector's logit for the target class, taken on the base model's last spatial
  feature map (:attr:`dfx.models.backbones.BackboneSpec.attribution_layer`), scaled to
  [0, 1] and mapped back onto the image as displayed (EXIF orientation applied);
* contribution shares: integrated gradients of the same logit over the stacked (3, D)
  features, from an all-zero baseline, summed per specialist, negative sums set to 0 and
  normalised to add to 1.

A baseline detector (one backbone) gets one map, under the key ``detector``, and no shares.
The attributions come from captum (the ``explain`` extra).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dfx.classes import CLASSES, class_index
from dfx.data.decoding import displayed_size
from dfx.engine.predictions import Batches, Prediction, in_input_order, make_prediction
from dfx.errors import DfxError
from dfx.extras import require
from dfx.limits import DEFAULT_MAX_PIXELS
from dfx.models.backbones import get_spec, set_module
from dfx.models.inference_settings import explain_batch_size
from dfx.progress import ProgressReporter, or_null
from dfx.threshold import Threshold

METHODS: tuple[str, ...] = ("gradcam", "gradcam-relative", "gradcam++", "layercam", "hirescam")
"""Heatmap methods, see :func:`class_activation_map`."""

TARGETS: tuple[str, ...] = ("predicted", *CLASSES)
"""What the maps and shares explain: the predicted class, or one named class."""

BASELINE_KEY = "detector"
"""The key of a baseline detector's single heatmap."""

# Integration steps over the fusion head (captum's Gauss-Legendre rule). Each step runs the
# head forward and back, which for D = 1024 costs more than the backbone itself. Measured on
# the tiny test model, the attributions add up to the logit difference within 1.2% (median;
# 8% at worst) at 16 steps, 0.6% (3%) at 32.
SHARE_STEPS = 16


@dataclass
class Explanation:
    """Heatmaps and contribution shares of one input (see :mod:`dfx.engine.explain`)."""

    path: str
    """The input's path (or ``<image #i>`` for an in-memory image)."""
    prediction: Prediction
    """The :class:`dfx.api.Prediction` of the input (carries the error of a failed input)."""
    target: str | None = None
    """The class the heatmaps and shares explain (None if the input failed)."""
    method: str | None = None
    """The heatmap method, one of :data:`METHODS`."""
    heatmaps: dict[str, np.ndarray] | None = None
    """Specialist (dm, gan, real; ``detector`` for a baseline) → float32 (H, W) map in [0, 1]."""
    shares: dict[str, float] | None = None
    """Specialist → share of the target logit it drove (non-negative, sum 1; None: baseline)."""
    size: tuple[int, int] | None = None
    """Displayed (width, height) of the image, the size of every heatmap."""

    @property
    def error(self) -> str | None:
        """Why the input could not be explained (None on success)."""
        return self.prediction.error

    def to_dict(self) -> dict:
        """The JSON record (no heatmaps); a failed input keeps only its path and error."""
        record = self.prediction.to_dict()
        if self.error is not None:
            return record
        record.pop("error", None)
        return {
            **record,
            "target": self.target,
            "method": self.method,
            "shares": self.shares,
            "size": list(self.size) if self.size else None,
            "error": None,
        }


def check_available() -> None:
    """Fail in one sentence naming ``deepfeaturex[explain]`` without the attribution library."""
    require("explain")


def iter_explain(
    detector,
    images: Sequence[str | Path | object],
    *,
    target: str | None = None,
    method: str = "gradcam",
    batch_size: int | None = None,
    workers: int | None = None,
    progress: ProgressReporter | None = None,
    threshold: float | Threshold | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> Batches[Explanation]:
    """:meth:`dfx.api.Detector.explain` one batch at a time, in input order, as soon as each
    is done; the threshold and the batch size (default:
    :func:`dfx.models.inference_settings.explain_batch_size`) are resolved once, at the
    call, and come back as the result's ``threshold`` and ``batch_size``."""
    check_available()
    wanted = check_options(target, method)
    decision = detector.resolve_threshold(threshold)
    step = batch_size or explain_batch_size(detector.placement.device.type)
    side = detector.preprocessing.input_size

    def run(reporter: ProgressReporter | None):
        explainer = _Explainer(detector, method)
        loader = detector.image_batches(images, step, workers, max_pixels)
        reporter = or_null(reporter)
        reporter.start("explain", len(images), "explain")
        for batch in loader:
            explained = {}
            if len(batch.indices):
                inputs = detector.placement.to_device(batch.inputs)
                probs, maps, shares = explainer.run(inputs, wanted)
                for row, index in enumerate(batch.indices.tolist()):
                    row_shares = None if shares is None else shares[row]
                    row_maps = {k: v[row] for k, v in maps.items()}
                    explained[index] = (probs[row], row_maps, row_shares)
            failed = {f.index: f.reason for f in batch.failures}

            def record(index, name, outputs):
                row_probs, row_maps, row_shares = outputs
                prediction = make_prediction(name, row_probs, decision.value, images[index], side)
                size = displayed_size(images[index])
                return Explanation(
                    name,
                    prediction,
                    target=wanted or prediction.label,
                    method=method,
                    heatmaps={k: explainer.to_display(m, size) for k, m in row_maps.items()},
                    shares=None
                    if row_shares is None
                    else dict(zip(CLASSES, map(float, row_shares))),
                    size=size,
                )

            out = in_input_order(images, explained, failed, record, _failed)
            reporter.advance("explain", len(out))
            yield out
        reporter.finish("explain")

    return Batches(run, decision, step, progress)


def _failed(name: str, reason: str) -> Explanation:
    return Explanation(name, Prediction.failed(name, reason))


def check_options(target: str | None, method: str) -> str | None:
    """The class to explain (None: the predicted one), or one sentence on a bad option."""
    if method not in METHODS:
        raise DfxError(f"`method` {method!r} is not one of {', '.join(METHODS)}.")
    if target in (None, "predicted"):
        return None
    if target not in CLASSES:
        raise DfxError(f"`target` {target!r} is not one of {', '.join(TARGETS)}.")
    return target


class _Explainer:
    """Computes maps at the network's feature resolution and shares, one batch at a time."""

    def __init__(self, detector, method: str) -> None:
        if detector.backend != "torch":
            raise DfxError(
                f"explanations need gradients, which the {detector.backend} runtime does "
                "not give, and an ONNX file has no torch weights; explain the .pt file."
            )
        self.network = detector.network
        self.placement = detector.placement
        self.method = method
        self.spec = get_spec(detector.model_file.backbone)
        self.fused = detector.model_file.architecture == "deepfeaturex"
        self.preprocessing = detector.preprocessing

    def run(self, inputs: Tensor, wanted: str | None):
        """Probabilities (B, 3), maps {key: (B, h, w)} and shares (B, 3) or None, on the CPU."""
        network = self.network.eval()
        with torch.no_grad(), self.placement.autocast():
            if self.fused:
                features = network.features(inputs).float()
                logits = network.head(features).float()
            else:
                logits = network(inputs).float()
        probs = torch.softmax(logits, dim=1).cpu().numpy()
        if wanted is None:
            targets = logits.argmax(dim=1)
        else:
            targets = torch.full((len(inputs),), class_index(wanted), device=logits.device)
        if not self.fused:
            return probs, {BASELINE_KEY: self._map(network, network, inputs, targets)}, None
        maps = {}
        for position, name in enumerate(CLASSES):
            forward = _SpecialistForward(network, name, position, features)
            maps[name] = self._map(forward, network.extractors[name], inputs, targets)
        return probs, maps, self._shares(network.head, features, targets)

    def _map(self, forward: Callable, backbone: nn.Module, inputs: Tensor, targets: Tensor):
        with _spatial_layer(backbone, self.spec) as layer, self.placement.autocast():
            maps = _layer_cam(forward, layer, self.method, inputs, targets)
        return maps.detach().float().cpu()

    def _shares(self, head: nn.Module, features: Tensor, targets: Tensor) -> np.ndarray:
        from captum.attr import IntegratedGradients

        with self.placement.autocast():
            attributions = IntegratedGradients(head).attribute(
                features,
                baselines=torch.zeros_like(features),
                target=targets,
                n_steps=SHARE_STEPS,
                internal_batch_size=max(len(features), 1) * 8,
            )
        return normalised_shares(attributions.detach().float().sum(dim=2).cpu().numpy())

    def to_display(self, feature_map: Tensor, size: tuple[int, int]) -> np.ndarray:
        """A feature-resolution map resized onto the displayed image, scaled to [0, 1].

        The network saw the image squashed to a square (and, for ViT, centre-cropped): the map
        is stretched back the same way; the border a crop cut off gets 0 (never looked at).
        """
        resize, crop = self.preprocessing.resize, self.preprocessing.crop
        grid = feature_map[None, None]
        if crop is not None:
            grid = F.interpolate(grid, size=(crop, crop), mode="bilinear", align_corners=False)
            top = int(round((resize - crop) / 2.0))
            grid = F.pad(grid, (top, resize - crop - top, top, resize - crop - top))
        width, height = size
        shown = F.interpolate(grid, size=(height, width), mode="bilinear", align_corners=False)
        shown = shown[0, 0].clamp_(min=0)
        peak = float(shown.max())
        return (shown / peak if peak > 0 else shown).numpy().astype(np.float32)


def class_activation_map(method: str, gradients: Tensor, activations: Tensor) -> Tensor:
    """A (B, h, w) map, ReLU applied, from a layer's (B, C, h, w) gradients and activations.

    * ``gradcam`` (Selvaraju et al., 2017): channels weighted by their mean gradient;
    * ``gradcam-relative``: Grad-CAM measured from the image's average cell instead of an
      empty feature map, i.e. the first-order change of the score if the cell's features
      were replaced by the average of the image's cells: positive where a cell carries more
      evidence for the target than the image as a whole;
    * ``gradcam++`` (Chattopadhay et al., 2018): channels weighted by their positive
      gradients, each cell's weight from the second- and third-order terms;
    * ``layercam`` (Jiang et al., 2021): positive gradient × activation, cell by cell;
    * ``hirescam`` (Draelos & Carin, 2020): gradient × activation, cell by cell.

    Grad-CAM and HiResCAM let channels with negative evidence cancel positive ones, so a
    map is blank wherever a cell's net evidence is negative, everywhere for an image whose
    features argue against the target as a whole; the relative map is blank only when the
    evidence is spread evenly. Grad-CAM++ and LayerCAM count only positive gradients.
    """
    gradients, activations = gradients.float(), activations.float()
    if method == "gradcam":
        cells = gradients.mean(dim=(2, 3), keepdim=True) * activations
    elif method == "gradcam-relative":
        average_cell = activations.mean(dim=(2, 3), keepdim=True)
        cells = gradients.mean(dim=(2, 3), keepdim=True) * (activations - average_cell)
    elif method == "gradcam++":
        squared = gradients.pow(2)
        denominator = 2 * squared + activations.sum(dim=(2, 3), keepdim=True) * gradients.pow(3)
        # The closed form assumes non-negative activations; where signed ones (a ViT's
        # normalised tokens) make the denominator vanish or turn negative, the cell counts 0.
        positive = denominator > 0
        alpha = torch.where(positive, squared / torch.where(positive, denominator, 1.0), 0.0)
        weights = (alpha * F.relu(gradients)).sum(dim=(2, 3), keepdim=True)
        cells = weights * activations
    elif method == "layercam":
        cells = F.relu(gradients) * activations
    elif method == "hirescam":
        cells = gradients * activations
    else:
        raise DfxError(f"`method` {method!r} is not one of {', '.join(METHODS)}.")
    return F.relu(cells.sum(dim=1))


def normalised_shares(sums: np.ndarray) -> np.ndarray:
    """Per-specialist attribution sums (B, 3) → non-negative shares adding to 1 per row.

    A specialist whose features pushed the logit down gets 0; when none pushed it up, the
    shares are equal (nothing drove the score).
    """
    positive = np.clip(sums, 0.0, None)
    totals = positive.sum(axis=1, keepdims=True)
    equal = np.full_like(positive, 1.0 / positive.shape[1])
    return np.where(totals > 0, positive / np.where(totals > 0, totals, 1.0), equal)


class _SpecialistForward(nn.Module):
    """The fused logits with one specialist recomputed from the images, the others fixed.

    The other two specialists' features do not depend on this one's layers, so the gradient
    of the logit with respect to its feature map is the same as in the whole network.
    """

    def __init__(self, network: nn.Module, name: str, position: int, features: Tensor) -> None:
        super().__init__()
        self.network, self.name, self.position = network, name, position
        self.fixed = features

    def forward(self, images: Tensor) -> Tensor:
        own = self.network.extractors[self.name](images).float()
        parts = [own if i == self.position else self.fixed[:, i] for i in range(len(CLASSES))]
        return self.network.head(torch.stack(parts, dim=1))


def _layer_cam(
    forward: Callable, layer: nn.Module, method: str, inputs: Tensor, targets: Tensor
) -> Tensor:
    """captum's layer pass (gradients and activations of one layer) combined into a CAM."""
    from captum.attr import LayerGradientXActivation

    layer_pass = LayerGradientXActivation(forward, layer)
    # captum hands this combiner the layer's gradients and activations.
    layer_pass.multiply_gradient_acts = lambda gradients, activations: tuple(
        map(partial(class_activation_map, method), gradients, activations)
    )
    return layer_pass.attribute(inputs, target=targets)


class _TokenGrid(nn.Module):
    """Wraps a ViT module whose output is tokens; the patch tokens pass through ``grid``.

    ``grid`` is an identity whose output is the patch tokens laid out as a (B, C, h, w) map,
    so that CAM methods see a spatial feature map; the wrapper's own output is unchanged.
    """

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.grid = nn.Identity()

    def forward(self, tokens: Tensor) -> Tensor:
        out = self.inner(tokens)
        batch, count, channels = out.shape
        side = math.isqrt(count - 1)
        patches = out[:, 1:].transpose(1, 2).reshape(batch, channels, side, side)
        patches = self.grid(patches)
        return torch.cat([out[:, :1], patches.flatten(2).transpose(1, 2)], dim=1)


@contextlib.contextmanager
def _spatial_layer(backbone: nn.Module, spec) -> Iterator[nn.Module]:
    """The backbone's attribution layer; for a ViT, a (B, C, h, w) view of its patch tokens.

    The ViT wrapper is put in place for the duration only, so the network, its state-dict
    keys and its outputs are as before afterwards.
    """
    layer = backbone.get_submodule(spec.attribution_layer)
    if not spec.vit:
        yield layer
        return
    wrapper = _TokenGrid(layer)
    set_module(backbone, spec.attribution_layer, wrapper)
    try:
        yield wrapper.grid
    finally:
        set_module(backbone, spec.attribution_layer, layer)
