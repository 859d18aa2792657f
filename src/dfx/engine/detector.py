"""The detector: a model file's network on a device, and every way of running it on images.

Prediction, explanations, evaluation, the robustness runs and the service all go through
:class:`Detector`: it applies the inference settings (:mod:`dfx.models.inference_settings`:
the backend, the CPU tuning, the default batch size), resolves the threshold once per run,
and owns the data loaders and the softmax, so nothing else touches its network, backend or
placement.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from dfx import distributed
from dfx.checkpoint import DETECTOR_FORMAT, ModelFile, load_model_file, load_weights
from dfx.classes import CLASSES
from dfx.data.dataset import ImageDataset, VariantDataset, make_loader
from dfx.data.perturbations import JpegCompression, Perturbation
from dfx.data.shuffle import ShardSampler
from dfx.engine import explain as explaining
from dfx.engine import sessions
from dfx.engine.device import Placement, default_workers, resolve_placement
from dfx.engine.inference import Outputs, iter_network, run_network
from dfx.engine.onnx_file import cached_graph, read_onnx_detector
from dfx.engine.predictions import (
    Batches,
    ImageInput,
    Prediction,
    in_input_order,
    make_prediction,
)
from dfx.errors import DfxError
from dfx.limits import DEFAULT_MAX_PIXELS
from dfx.model_source import resolve_model
from dfx.models.detector import PerVariant, build_detector_network
from dfx.models.inference_settings import (
    choose_backend,
    default_batch_size,
    require_backend,
    settings_for,
)
from dfx.progress import ProgressReporter
from dfx.threshold import Threshold, resolve_threshold


class Detector:
    """A trained detector (DeepFeatureX fusion or a baseline backbone), ready to run on a device."""

    def __init__(
        self, model_file: ModelFile, placement: Placement, network: nn.Module | None = None
    ) -> None:
        if list(model_file.classes) != list(CLASSES):
            raise DfxError(f"model classes {model_file.classes} differ from {list(CLASSES)}.")
        self.model_file = model_file
        self.placement = placement
        """Where and how torch runs: the device, autocast, layout, compilation."""
        self.preprocessing = model_file.preprocessing
        self.network = network if network is not None else torch_network(model_file)
        """Images (B, 3, H, W) → logits (B, 3): the torch module or a backend's session."""
        placement.prepare(self.network).eval()
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

        ``runtime`` (as ``--runtime``): the backend, torch, onnxruntime, openvino, or auto
        (see :func:`dfx.models.inference_settings.choose_backend`). A
        ``.pt`` file runs under ONNX Runtime or OpenVINO through a graph exported once into
        the cache (:func:`dfx.engine.onnx_file.cached_graph`). ``compile``: torch.compile.
        """
        path = Path(path)
        is_onnx = path.suffix.lower() == ".onnx"
        model_file = None if is_onnx else load_model_file(path, DETECTOR_FORMAT)
        backbone = model_file.backbone if model_file is not None else None
        name = choose_backend(runtime, is_onnx, precision, backbone, device, compile)
        if name == "torch":
            if is_onnx:
                raise DfxError(
                    f"{path} is an ONNX graph: run it with the onnxruntime or openvino `runtime`, "
                    "or give the .pt file to the torch runtime."
                )
            return cls._on_torch(model_file, device, precision, compile)
        if compile:
            raise DfxError(f"`compile` applies to the torch runtime only, not to {name}.")
        session_precision = sessions.session_precision(name, precision)
        require_backend(name)
        chosen = resolve_placement(device, "fp32")  # checks the device, joins torchrun's group
        try:
            if is_onnx:
                model_file, graph = read_onnx_detector(path), path
            else:
                graph = cached_graph(path, torch_network(model_file), model_file)
            network = sessions.session_network(
                name, graph, torch.get_num_threads(), chosen.device, session_precision
            )
        except DfxError:
            if runtime.strip().lower() != "auto" or is_onnx:
                raise
            # auto chose the session only to be faster: where it cannot start, torch runs.
            return cls._on_torch(model_file, device, precision, compile)
        # The session does the arithmetic; torch only decodes and batches on the CPU.
        return cls(model_file, Placement(torch.device("cpu"), None), network)

    @classmethod
    def _on_torch(cls, model_file: ModelFile, device: str, precision: str, compile: bool):
        """``model_file`` run by torch, channels-last on a CPU where its family gains by it."""
        placement = resolve_placement(device, precision, compile)
        if placement.device.type == "cpu" and settings_for(model_file.backbone).cpu_channels_last:
            placement = replace(placement, channels_last=True)
        return cls(model_file, placement)

    @property
    def backend(self) -> str:
        """The backend doing the arithmetic: torch, onnxruntime or openvino."""
        return getattr(self.network, "backend", "torch")

    @property
    def threshold(self) -> float | None:
        """The threshold on P(fake) calibrated on validation data at training time, if stored."""
        return self.model_file.threshold

    def resolve_threshold(self, override: float | Threshold | None = None) -> Threshold:
        """``override`` if given, else the model file's calibrated threshold, else 0.5 (a
        :class:`Threshold` resolved already is kept)."""
        return resolve_threshold(override, self.threshold)

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names in output order."""
        return CLASSES

    def batch_size(self, requested: int | None = None) -> int:
        """``requested``, or the default of the inference settings
        (:func:`dfx.models.inference_settings.default_batch_size`)."""
        return requested or default_batch_size(self.model_file.backbone, self.placement.device.type)

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
        ``batch_size`` None: :meth:`batch_size`'s default; ``workers`` None:
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

    @property
    def decode_size(self) -> int | None:
        """The side :meth:`decode` shrinks images towards as it decodes them (the network's
        resize), for code that decodes in processes of its own as this detector would."""
        return ImageDataset([], None, self.preprocessing).decode_size

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
            dataset, images_per_step, workers=workers, pin_memory=self.placement.is_cuda
        )

    def _probabilities(self, network, loader, progress, description) -> Outputs:
        outputs = run_network(
            network, loader, self.placement, progress=progress, description=description
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
        threshold: float | Threshold | None = None,
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
        size, step = len(images), batches.batch_size
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
        threshold: float | Threshold | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> Batches[Prediction]:
        """:meth:`predict` one batch at a time, in input order, as soon as each is done.

        The threshold and the batch size are resolved once, at the call, and come back as
        the result's ``threshold`` (a :class:`Threshold`) and ``batch_size``. In a
        data-parallel run each process yields the predictions of its own share of
        ``images`` only: the batches rank, rank + world size, and so on.
        """
        decision = self.resolve_threshold(threshold)
        step = self.batch_size(batch_size)
        side = self.preprocessing.input_size

        def run(reporter: ProgressReporter | None):
            dataset = ImageDataset(images, None, self.preprocessing, max_pixels=max_pixels)
            loader = self._loader(dataset, step, workers)
            for part in iter_network(self.network, loader, self.placement, progress=reporter):
                probs = torch.softmax(part.values, dim=1).numpy() if len(part.indices) else None
                found = {int(i): probs[row] for row, i in enumerate(part.indices.tolist())}
                failed = {f.index: f.reason for f in part.failures}

                def record(index, name, row):
                    return make_prediction(name, row, decision.value, images[index], side)

                yield in_input_order(images, found, failed, record)

        return Batches(run, decision, step, progress)

    def check_explain(self, target: str | None = None, method: str = "gradcam") -> None:
        """Fail before any work when :meth:`explain` cannot run: the ``explain`` extra missing
        (:class:`dfx.extras.MissingExtra`), or a bad ``target`` or ``method`` (DfxError)."""
        explaining.check_available()
        explaining.check_options(target, method)

    def explain(self, images: Sequence[ImageInput], target: str | None = None, **options) -> list:
        """One :class:`dfx.engine.explain.Explanation` per input: heatmaps and shares.

        ``target``: None (the predicted class) or dm, gan, real; ``method``: one of
        :data:`dfx.engine.explain.METHODS`; other options as :meth:`predict`. Needs
        ``pip install "deepfeaturex[explain]"``. Runs in one process.
        """
        return [item for batch in self.iter_explain(images, target, **options) for item in batch]

    def iter_explain(
        self, images: Sequence[ImageInput], target: str | None = None, **options
    ) -> Batches:
        """:meth:`explain` one batch at a time, in input order, as soon as each is done
        (with the resolved ``threshold`` and ``batch_size``, as :meth:`iter_predict`)."""
        return explaining.iter_explain(self._with_gradients(), images, target=target, **options)

    def _with_gradients(self) -> Detector:
        """This detector, or its torch twin when a session backend (no gradients) runs it."""
        if self.backend == "torch" or not self.model_file.state_dict:
            return self  # a .onnx file has no torch weights: explain says so
        if self._torch_twin is None:
            self._torch_twin = Detector(self.model_file, Placement(torch.device("cpu"), None))
        return self._torch_twin


def torch_network(model_file: ModelFile) -> nn.Module:
    """A detector file's network as a torch module with the file's weights, on the CPU."""
    # Built on the meta device and then given the file's tensors: no wasted random init.
    with torch.device("meta"):
        network = build_detector_network(
            model_file.architecture, model_file.backbone, model_file.preprocessing.input_size
        )
    load_weights(network, model_file.state_dict, f"the detector's {model_file.backbone} weights")
    return network


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

    ``device`` is auto, cpu, cuda or cuda:N; ``runtime`` (as ``--runtime``, the backend)
    auto, torch, onnxruntime or openvino; ``sha256`` is checked against the file
    (:func:`dfx.model_source.resolve_model`); ``progress`` hears of downloads.
    """
    local = resolve_model(path, sha256, progress=progress)
    return Detector.load(local, device, precision, compile, runtime)
