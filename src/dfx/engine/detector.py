"""The detector: a model file's network on a device, and every way of running it on images.

Prediction, evaluation and the robustness runs all go through :class:`Detector`: it owns
the data loaders, the default batch size and the softmax, so nothing else touches its
network or runtime.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from dfx import distributed
from dfx.checkpoint import DETECTOR_FORMAT, ModelFile, load_model_file, load_weights
from dfx.classes import CLASSES
from dfx.data.dataset import ImageDataset, VariantDataset, make_loader
from dfx.data.decoding import ImageBytes
from dfx.data.perturbations import JpegCompression, Perturbation
from dfx.data.provenance import Provenance, read_provenance
from dfx.data.shuffle import ShardSampler
from dfx.engine import runtimes
from dfx.engine.device import Runtime, default_workers, resolve_runtime
from dfx.engine.inference import Outputs, iter_network, run_network
from dfx.engine.onnx_file import cached_graph, read_onnx_detector
from dfx.engine.runtimes import SESSION_RUNTIMES
from dfx.errors import DfxError
from dfx.limits import DEFAULT_MAX_PIXELS
from dfx.metrics import p_fake_of
from dfx.model_source import resolve_model
from dfx.models.detector import PerVariant, build_detector_network
from dfx.models.registry import get_spec
from dfx.progress import ProgressReporter
from dfx.threshold import Threshold, resolve_threshold

ImageInput = str | Path | ImageBytes | Image.Image
"""An input: a file, an encoded image in memory (named), or a decoded Pillow image."""


@dataclass
class Prediction:
    """The verdict on one input (the fields of ``dfx predict --json``)."""

    path: str
    """The input's path or :class:`ImageBytes` name (``<image #i>`` for a Pillow image)."""
    label: str | None
    """Most probable class: dm, gan or real (None if the input failed)."""
    probs: dict[str, float] | None
    """Probability of each class."""
    p_fake: float | None
    """P(fake) = p_dm + p_gan."""
    error: str | None = None
    """Why the input could not be classified (None on success)."""
    fake: bool | None = None
    """Whether P(fake) reaches the detector's threshold (calibrated, or given)."""
    provenance: Provenance | None = None
    """What the file's metadata says about its origin; it never enters the verdict."""
    warning: str | None = None
    """Why the verdict deserves caution (an image far smaller than the model's input), or None."""

    def to_dict(self) -> dict:
        """The JSON record; a failed input keeps only its path and error."""
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        return {
            "path": self.path,
            "label": self.label,
            "probs": self.probs,
            "p_fake": self.p_fake,
            "fake": self.fake,
            "provenance": self.provenance.to_dict() if self.provenance else None,
            "warning": self.warning,
            "error": None,
        }


class Detector:
    """A trained detector (DeepFeatureX fusion or a baseline backbone), ready to run on a device."""

    def __init__(
        self, model_file: ModelFile, runtime: Runtime, network: nn.Module | None = None
    ) -> None:
        if list(model_file.classes) != list(CLASSES):
            raise DfxError(f"model classes {model_file.classes} differ from {list(CLASSES)}.")
        self.model_file = model_file
        self.runtime = runtime
        self.preprocessing = model_file.preprocessing
        self.network = network if network is not None else torch_network(model_file)
        """Images (B, 3, H, W) → logits (B, 3): the torch module or a runtime's session."""
        runtime.prepare(self.network).eval()
        self._torch_twin: Detector | None = None

    @classmethod
    def load(
        cls,
        path: str | Path,
        device: str = "auto",
        precision: str = "auto",
        compile: bool = False,
        runtime: str = "auto",
    ) -> Detector:
        """Load a ``.pt`` detector (train-fusion, train-baseline) or a ``dfx export`` ``.onnx``.

        ``runtime``: torch, onnxruntime, openvino, or auto (see :func:`choose_runtime`). A
        ``.pt`` file runs under ONNX Runtime or OpenVINO through a graph exported once into
        the cache (:func:`dfx.engine.onnx_file.cached_graph`). ``compile``: torch.compile.
        """
        path = Path(path)
        is_onnx = path.suffix.lower() == ".onnx"
        model_file = None if is_onnx else load_model_file(path, DETECTOR_FORMAT)
        backbone = model_file.backbone if model_file is not None else None
        name = choose_runtime(runtime, is_onnx, precision, backbone, device, compile)
        if name == "torch":
            if is_onnx:
                raise DfxError(
                    f"{path} is an ONNX graph: run it with the onnxruntime or openvino `runtime`, "
                    "or give the .pt file to the torch runtime."
                )
            return cls._on_torch(model_file, device, precision, compile)
        if compile:
            raise DfxError(f"`compile` applies to the torch runtime only, not to {name}.")
        session_precision = runtimes.session_precision(name, precision)
        runtimes.require(name)
        chosen = resolve_runtime(device, "fp32")  # checks the device, joins torchrun's group
        try:
            if is_onnx:
                model_file, graph = read_onnx_detector(path), path
            else:
                graph = cached_graph(path, torch_network(model_file), model_file)
            network = runtimes.session_network(
                name, graph, torch.get_num_threads(), chosen.device, session_precision
            )
        except DfxError:
            if runtime.strip().lower() != "auto" or is_onnx:
                raise
            # auto chose the session only to be faster: where it cannot start, torch runs.
            return cls._on_torch(model_file, device, precision, compile)
        # The session does the arithmetic; torch only decodes and batches on the CPU.
        return cls(model_file, Runtime(torch.device("cpu"), None), network)

    @classmethod
    def _on_torch(cls, model_file: ModelFile, device: str, precision: str, compile: bool):
        """``model_file`` run by torch, channels-last on a CPU where its family gains by it."""
        runtime = resolve_runtime(device, precision, compile)
        if runtime.device.type == "cpu" and get_spec(model_file.backbone).cpu_channels_last:
            runtime = replace(runtime, channels_last=True)
        return cls(model_file, runtime)

    @property
    def runtime_name(self) -> str:
        """The runtime doing the arithmetic: torch, onnxruntime or openvino."""
        return getattr(self.network, "runtime", "torch")

    @property
    def threshold(self) -> float | None:
        """The threshold on P(fake) calibrated on validation data at training time, if stored."""
        return self.model_file.threshold

    def resolve_threshold(self, override: float | None = None) -> Threshold:
        """``override`` if given, else the model file's calibrated threshold, else 0.5."""
        return resolve_threshold(override, self.threshold)

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names in output order."""
        return CLASSES

    def batch_size(self, requested: int | None = None) -> int:
        """``requested``, or the default: the backbone's measured CPU batch, 256 on CUDA."""
        if requested:
            return requested
        if self.runtime.device.type == "cpu":
            return get_spec(self.model_file.backbone).cpu_batch_size
        return self.runtime.default_batch_size()

    def run(
        self,
        images: Sequence[ImageInput],
        *,
        targets: Sequence[int] | None = None,
        qf: int | None = None,
        batch_size: int | None = None,
        workers: int | None = None,
        progress: ProgressReporter | None = None,
        description: str = "classify",
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> Outputs:
        """Class probabilities (N, 3) of the readable images, optionally JPEG-compressed first.

        Files of more than ``max_pixels`` pixels are skipped as failures (None: no limit).
        ``batch_size`` None: :meth:`batch_size`'s default (the backbone's measured CPU
        batch, or 256 on CUDA); ``workers`` None:
        decoding processes from the CPU count, none when everything fits in one batch.
        """
        perturbation = JpegCompression(qf) if qf is not None else None
        dataset = ImageDataset(images, targets, self.preprocessing, perturbation, max_pixels)
        loader = self._loader(dataset, self.batch_size(batch_size), workers)
        return self._probabilities(self.network, loader, progress, description)

    def run_variants(
        self,
        images: Sequence[ImageInput],
        variants: Sequence[Perturbation],
        *,
        batch_size: int | None = None,
        workers: int | None = None,
        progress: ProgressReporter | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> Outputs:
        """Class probabilities (N, V, 3) of each readable image under each of V ``variants``.

        Every image is decoded once and perturbed in memory; one that fails under any variant
        fails as a whole. ``batch_size`` counts network inputs (images × variants), so a step
        reads ``batch_size // V`` images, at least one.
        """
        dataset = VariantDataset(images, None, self.preprocessing, variants, max_pixels)
        images_per_step = max(1, self.batch_size(batch_size) // len(variants))
        loader = self._loader(dataset, images_per_step, workers)
        description = f"{len(variants)} variants per image"
        return self._probabilities(PerVariant(self.network), loader, progress, description)

    def decode(self, image: ImageInput, max_pixels: int | None = DEFAULT_MAX_PIXELS):
        """One input decoded exactly as :meth:`predict` decodes it (the same checks, the same
        shrinking for the resize), as RGB; ImageReadError with predict's reason otherwise.

        Predicting the result gives the same record as predicting the input itself, so
        callers can decode concurrently (Pillow releases the GIL) and batch the images.
        """
        return ImageDataset([], None, self.preprocessing, max_pixels=max_pixels).decode(image)

    def image_batches(
        self,
        images: Sequence[ImageInput],
        batch_size: int,
        workers: int | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ):
        """The decoded images as this detector's input batches (:class:`dfx.data.dataset.Batch`),
        for code that runs the network its own way (explanations)."""
        dataset = ImageDataset(images, None, self.preprocessing, max_pixels=max_pixels)
        return self._loader(dataset, batch_size, workers)

    def _loader(self, dataset, images_per_step: int, workers: int | None):
        # No worker processes when everything fits in one step: starting them costs more.
        if workers is None:
            workers = default_workers() if len(dataset) > images_per_step else 0
        return make_loader(
            dataset, images_per_step, workers=workers, pin_memory=self.runtime.is_cuda
        )

    def _probabilities(self, network, loader, progress, description) -> Outputs:
        outputs = run_network(
            network, loader, self.runtime, progress=progress, description=description
        )
        if len(outputs.values):
            outputs.values = torch.softmax(outputs.values, dim=-1)
        return outputs

    def predict(
        self,
        images: Sequence[ImageInput],
        *,
        batch_size: int | None = None,
        workers: int | None = None,
        progress: ProgressReporter | None = None,
        threshold: float | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> list[Prediction]:
        """One :class:`Prediction` per input, in input order; unreadable inputs carry an error.

        ``fake`` is ``p_fake >= threshold``; the threshold defaults to the calibrated one
        stored in the model file, or 0.5 for files without one. In a data-parallel run every
        process classifies its share and receives all the predictions.
        """
        batches = self.iter_predict(
            images,
            batch_size=batch_size,
            workers=workers,
            progress=progress,
            threshold=threshold,
            max_pixels=max_pixels,
        )
        own = [prediction for batch in batches for prediction in batch]
        shares = distributed.gather_objects(own)
        if len(shares) == 1:
            return shares[0]
        # Each process classified whole batches (ShardSampler), one prediction per input.
        size, step = len(images), self.batch_size(batch_size)
        placed: list[Prediction | None] = [None] * size
        for rank, share in enumerate(shares):
            for position, prediction in zip(ShardSampler(size, rank, len(shares), step), share):
                placed[position] = prediction
        return placed

    def iter_predict(
        self,
        images: Sequence[ImageInput],
        *,
        batch_size: int | None = None,
        workers: int | None = None,
        progress: ProgressReporter | None = None,
        threshold: float | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> Iterator[list[Prediction]]:
        """:meth:`predict` one batch at a time, in input order, as soon as each is done.

        In a data-parallel run each process yields the predictions of its own share of
        ``images`` only: the batches rank, rank + world size, and so on.
        """
        threshold = self.resolve_threshold(threshold).value
        dataset = ImageDataset(images, None, self.preprocessing, max_pixels=max_pixels)
        loader = self._loader(dataset, self.batch_size(batch_size), workers)
        for part in iter_network(self.network, loader, self.runtime, progress=progress):
            probs = torch.softmax(part.values, dim=1).numpy() if len(part.indices) else None
            found = {int(i): row for row, i in enumerate(part.indices.tolist())}
            failed = {f.index: f for f in part.failures}
            batch = []
            for index in sorted([*found, *failed]):
                name = input_name(images[index], index)
                if index in found:
                    batch.append(
                        make_prediction(name, probs[found[index]], threshold, images[index],
                                        self.preprocessing.input_size)
                    )  # fmt: skip
                else:
                    batch.append(Prediction(name, None, None, None, failed[index].reason))
            yield batch

    def explain(self, images: Sequence[ImageInput], target: str | None = None, **options) -> list:
        """One :class:`dfx.engine.explain.Explanation` per input: heatmaps and shares.

        ``target``: None (the predicted class) or dm, gan, real; ``method``: one of
        :data:`dfx.engine.explain.METHODS`; other options as :meth:`predict`. Needs
        ``pip install "deepfeaturex[explain]"``.
        """
        from dfx.engine.explain import explain

        return explain(self._with_gradients(), images, target=target, **options)

    def _with_gradients(self) -> Detector:
        """This detector, or its torch twin when a session runtime (no gradients) runs it."""
        if self.runtime_name == "torch" or not self.model_file.state_dict:
            return self  # a .onnx file has no torch weights: explain says so
        if self._torch_twin is None:
            runtime = Runtime(torch.device("cpu"), None)
            self._torch_twin = Detector(self.model_file, runtime)
        return self._torch_twin


def make_prediction(
    name: str,
    probs: np.ndarray,
    threshold: float,
    image: ImageInput | None = None,
    input_side: int | None = None,
) -> Prediction:
    """The prediction of one input from its class probabilities, fake at ``threshold``.

    With the ``image`` it came from, the record also gets the file's provenance and, with
    the model's ``input_side``, a warning when the image is far smaller than the input.
    """
    p_fake = float(p_fake_of(probs[None, :])[0])
    prediction = Prediction(
        name,
        CLASSES[int(probs.argmax())],
        {c: float(p) for c, p in zip(CLASSES, probs)},
        p_fake,
        fake=bool(p_fake >= threshold),
    )
    if image is not None:
        prediction.provenance = _provenance_of(image)
        if input_side is not None:
            prediction.warning = small_input_warning(image, input_side)
    return prediction


SMALL_INPUT_SHARE = 4
"""An image whose shorter side is under 1/4 of the model's input side carries a warning."""


def small_input_warning(image: ImageInput, input_side: int) -> str | None:
    """The warning of an image far smaller than the model's input (None: big enough)."""
    from dfx.data.decoding import displayed_size

    try:
        width, height = displayed_size(image)
    except (OSError, ValueError):  # it decoded a moment ago; no size, no warning
        return None
    if min(width, height) * SMALL_INPUT_SHARE >= input_side:
        return None
    return (
        f"the image is {width}×{height} pixels, far below the model's {input_side}×{input_side} "
        "input: the verdict rests on very little evidence"
    )


def _provenance_of(image: ImageInput) -> Provenance | None:
    return None if isinstance(image, Image.Image) else read_provenance(image)


def input_name(image: ImageInput, index: int) -> str:
    """How an input is named in results: its path or name, or ``<image #i>`` for Pillow's."""
    return str(image) if not isinstance(image, Image.Image) else f"<image #{index}>"


def torch_network(model_file: ModelFile) -> nn.Module:
    """A detector file's network as a torch module with the file's weights, on the CPU."""
    # Built on the meta device and then given the file's tensors: no wasted random init.
    with torch.device("meta"):
        network = build_detector_network(
            model_file.architecture, model_file.backbone, model_file.preprocessing.input_size
        )
    load_weights(network, model_file.state_dict, f"the detector's {model_file.backbone} weights")
    return network


def choose_runtime(
    runtime: str,
    is_onnx: bool,
    precision: str = "auto",
    backbone: str | None = None,
    device: str = "auto",
    compile: bool = False,
) -> str:
    """The runtime ``auto`` stands for, or ``runtime`` itself once checked.

    ``auto`` runs a ``.onnx`` file with ONNX Runtime, or with OpenVINO when ONNX Runtime is
    not installed or ``precision`` is bf16 (which ONNX Runtime does not run on the CPU). A
    ``.pt`` file runs with torch, except an exact (fp32) CPU run of a backbone whose
    registry entry measured ONNX Runtime faster, when ONNX Runtime is installed.
    """
    name = runtimes.check_runtime_name(runtime)
    if name != "auto":
        return name
    if not is_onnx:
        faster = (
            backbone is not None
            and get_spec(backbone).cpu_onnxruntime
            and precision.strip().lower() in ("auto", "fp32")
            and not compile
            and _runs_on_cpu(device)
            and runtimes.is_installed("onnxruntime")
        )
        return "onnxruntime" if faster else "torch"
    order = ("openvino", "onnxruntime") if precision.lower() == "bf16" else SESSION_RUNTIMES
    installed = [candidate for candidate in order if runtimes.is_installed(candidate)]
    return installed[0] if installed else order[0]


def _runs_on_cpu(device: str) -> bool:
    name = device.strip().lower()
    return name == "cpu" or (name == "auto" and not torch.cuda.is_available())


def load_detector(
    path: str | Path,
    device: str = "auto",
    precision: str = "auto",
    compile: bool = False,
    *,
    sha256: str | None = None,
    progress: ProgressReporter | None = None,
    runtime: str = "auto",
) -> Detector:
    """Load a detector: a file (``.pt`` or ``.onnx``), an ``https://`` URL or
    ``hf://ORG/REPO[@REVISION]/FILE``.

    ``device`` is auto, cpu, cuda or cuda:N; ``runtime`` auto, torch, onnxruntime or
    openvino; ``sha256`` is checked against the file (:func:`dfx.model_source.resolve_model`);
    ``progress`` hears of downloads.
    """
    local = resolve_model(path, sha256, progress=progress)
    return Detector.load(local, device, precision, compile, runtime)
