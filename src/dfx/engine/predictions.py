"""The verdict on one input, and the results of a run one batch at a time, in input order.

:class:`Prediction` is what ``dfx predict --json`` writes and what ``dfx explain`` and
``dfx serve`` build on; :func:`in_input_order` merges a batch's classified and failed
inputs back into input order for every kind of result; :class:`Batches` hands them out
together with the threshold and the batch size the run resolved.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np
from PIL import Image

from dfx.classes import CLASSES
from dfx.data.decoding import ImageBytes
from dfx.data.provenance import Provenance, read_provenance
from dfx.metrics import p_fake_of
from dfx.progress import ProgressReporter
from dfx.threshold import Threshold, is_called_fake

ImageInput = str | Path | ImageBytes | Image.Image
"""An input: a file, an encoded image in memory (named), or a decoded Pillow image."""

T = TypeVar("T")
R = TypeVar("R")


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

    @classmethod
    def failed(cls, path: str, reason: str) -> Prediction:
        """The record of an input that could not be classified."""
        return cls(str(path), None, None, None, reason)

    def at_threshold(self, threshold: float) -> Prediction:
        """This verdict decided at another ``threshold`` (a failed input stays as it is)."""
        if self.error is not None:
            return self
        return replace(self, fake=bool(is_called_fake(self.p_fake, threshold)))

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
        fake=bool(is_called_fake(p_fake, threshold)),
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


def in_input_order(
    images: Sequence[ImageInput],
    found: Mapping[int, R],
    failed: Mapping[int, str],
    record: Callable[[int, str, R], T],
    failure: Callable[[str, str], T] = Prediction.failed,
) -> list[T]:
    """One result per input of a batch, in input order.

    ``found`` maps the position of each classified input to what the network gave for it,
    ``failed`` the position of each input that failed to its reason; a classified input
    becomes ``record(position, name, found[position])``, a failed one ``failure(name,
    reason)``, named by :func:`input_name`.
    """
    results = []
    for index in sorted([*found, *failed]):
        name = input_name(images[index], index)
        if index in found:
            results.append(record(index, name, found[index]))
        else:
            results.append(failure(name, failed[index]))
    return results


class Batches(Generic[T]):
    """A run's results one batch (a list) at a time, in input order, as each is done, with
    the threshold and the batch size the run resolved before its first image."""

    def __init__(
        self,
        run: Callable[[ProgressReporter | None], Iterator[list[T]]],
        threshold: Threshold,
        batch_size: int,
        progress: ProgressReporter | None = None,
    ) -> None:
        self.threshold = threshold
        """The threshold on P(fake) the verdicts are decided at, and where it came from."""
        self.batch_size = batch_size
        """Images per step."""
        self.progress = progress
        """What hears of the work; it may be replaced until the first batch is asked for."""
        self._run = run
        self._batches: Iterator[list[T]] | None = None

    def __iter__(self) -> Batches[T]:
        return self

    def __next__(self) -> list[T]:
        if self._batches is None:
            self._batches = self._run(self.progress)
        return next(self._batches)
