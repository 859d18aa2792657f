"""The Python API: load a detector file and classify images.

>>> import dfx
>>> detector = dfx.load_detector("model.pt")
>>> [p.label for p in detector.predict(["photo.jpg"])]
['real']
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dfx import distributed
from dfx.checkpoint import DETECTOR_FORMAT, ModelFile, load_model_file, load_weights
from dfx.classes import CLASSES
from dfx.data.dataset import ImageDataset, make_loader
from dfx.data.perturbations import JpegCompression
from dfx.engine.device import Runtime, default_workers, resolve_runtime
from dfx.engine.inference import Outputs, iter_network, run_network
from dfx.errors import DfxError
from dfx.limits import DEFAULT_MAX_PIXELS
from dfx.metrics import p_fake_of
from dfx.models.detector import build_detector_network
from dfx.progress import ProgressReporter

ImageInput = str | Path | Image.Image


DEFAULT_THRESHOLD = 0.5
"""The threshold on P(fake) of model files without a calibrated one."""


@dataclass
class Threshold:
    """The threshold on P(fake) of the second binary decision, and where it came from."""

    value: float
    """Images with P(fake) >= value are called fake."""
    source: str
    """``option`` (--threshold), ``model`` (calibrated at training time) or ``default`` (0.5)."""

    def to_dict(self) -> dict:
        """Plain-data form for JSON."""
        return {"value": self.value, "source": self.source}


@dataclass
class Prediction:
    """The verdict on one input (the fields of ``dfx predict --json``)."""

    path: str
    """The input's path (or ``<image #i>`` for an in-memory image)."""
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
            "error": None,
        }


class Detector:
    """A trained detector (DeepFeatureX fusion or a baseline backbone), ready to run on a device."""

    def __init__(self, model_file: ModelFile, runtime: Runtime) -> None:
        if list(model_file.classes) != list(CLASSES):
            raise DfxError(f"model classes {model_file.classes} differ from {list(CLASSES)}.")
        self.model_file = model_file
        self.runtime = runtime
        self.preprocessing = model_file.preprocessing
        # Built on the meta device and then given the file's tensors: no wasted random init.
        with torch.device("meta"):
            self.network = build_detector_network(
                model_file.architecture, model_file.backbone, model_file.preprocessing.input_size
            )
        load_weights(
            self.network,
            model_file.state_dict,
            f"the detector's {model_file.backbone} weights",
        )
        runtime.prepare(self.network).eval()

    @classmethod
    def load(
        cls, path: str | Path, device: str = "auto", precision: str = "auto", compile: bool = False
    ) -> Detector:
        """Load a detector file written by ``dfx train-fusion`` (``compile``: torch.compile)."""
        runtime = resolve_runtime(device, precision, compile)
        return cls(load_model_file(path, DETECTOR_FORMAT), runtime)

    @property
    def threshold(self) -> float | None:
        """The threshold on P(fake) calibrated on validation data at training time, if stored."""
        return self.model_file.threshold

    def resolve_threshold(self, override: float | None = None) -> Threshold:
        """``override`` if given, else the model file's calibrated threshold, else 0.5."""
        if override is not None:
            if not 0.0 <= override <= 1.0:
                raise DfxError(f"--threshold must be between 0 and 1, got {override}.")
            return Threshold(float(override), "option")
        if self.threshold is not None:
            return Threshold(self.threshold, "model")
        return Threshold(DEFAULT_THRESHOLD, "default")

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names in output order."""
        return CLASSES

    def _loader(self, images, targets, qf, batch_size, workers, max_pixels):
        perturbation = JpegCompression(qf) if qf is not None else None
        dataset = ImageDataset(images, targets, self.preprocessing, perturbation, max_pixels)
        return self.data_loader(dataset, batch_size, workers)

    def data_loader(self, dataset, batch_size: int | None = None, workers: int | None = None):
        """A loader over ``dataset`` for this detector's device.

        ``batch_size`` None: the device's default (32 on CPU, 256 on CUDA); ``workers`` None:
        decoding processes from the CPU count, none when everything fits in one batch.
        """
        batch_size = batch_size or self.runtime.default_batch_size()
        if workers is None:
            workers = default_workers() if len(dataset) > batch_size else 0
        return make_loader(dataset, batch_size, workers=workers, pin_memory=self.runtime.is_cuda)

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
        ``batch_size`` None: the device's default (32 on CPU, 256 on CUDA); ``workers`` None:
        decoding processes from the CPU count, none when everything fits in one batch.
        """
        loader = self._loader(images, targets, qf, batch_size, workers, max_pixels)
        outputs = run_network(
            self.network, loader, self.runtime, progress=progress, description=description
        )
        if len(outputs.values):
            outputs.values = torch.softmax(outputs.values, dim=1)
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
        # Process r classified positions r, r + world, ... (ShardSampler), one prediction each.
        return [shares[i % len(shares)][i // len(shares)] for i in range(len(images))]

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
        ``images`` only: positions rank, rank + world size, and so on.
        """
        threshold = self.resolve_threshold(threshold).value
        loader = self._loader(images, None, None, batch_size, workers, max_pixels)
        for part in iter_network(self.network, loader, self.runtime, progress=progress):
            probs = torch.softmax(part.values, dim=1).numpy() if len(part.indices) else None
            found = {int(i): row for row, i in enumerate(part.indices.tolist())}
            failed = {f.index: f for f in part.failures}
            batch = []
            for index in sorted([*found, *failed]):
                name = _name(images[index], index)
                if index in found:
                    batch.append(_prediction(name, probs[found[index]], threshold))
                else:
                    batch.append(Prediction(name, None, None, None, failed[index].reason))
            yield batch

    def explain(self, images: Sequence[ImageInput], target: str | None = None, **options) -> list:
        """One :class:`dfx.engine.explain.Explanation` per input: heatmaps and shares.

        ``target``: None (the predicted class) or dm, gan, real; ``method``: gradcam or
        hirescam; other options as :meth:`predict`. Needs ``pip install "dfx[explain]"``.
        """
        from dfx.engine.explain import explain

        return explain(self, images, target=target, **options)


def _prediction(name: str, probs: np.ndarray, threshold: float) -> Prediction:
    p_fake = float(p_fake_of(probs[None, :])[0])
    return Prediction(
        name,
        CLASSES[int(probs.argmax())],
        {c: float(p) for c, p in zip(CLASSES, probs)},
        p_fake,
        fake=bool(p_fake >= threshold),
    )


def _name(image: ImageInput, index: int) -> str:
    return str(image) if not isinstance(image, Image.Image) else f"<image #{index}>"


def load_detector(
    path: str | Path, device: str = "auto", precision: str = "auto", compile: bool = False
) -> Detector:
    """Load a detector file; ``device`` is auto, cpu, cuda or cuda:N."""
    return Detector.load(path, device, precision, compile)
