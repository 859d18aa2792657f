"""One self-describing model-file format, loaded only with ``weights_only=True``.

A file is a dict of plain data (str, int, float, bool, None, lists, dicts) and tensors:
``format`` (``dfx-base`` or ``dfx-detector``), ``format_version``, ``dfx_version``,
``classes``, ``backbone``, ``architecture`` (detectors; absent in older files),
``preprocessing``, ``config``, ``metrics``, ``trained_on`` (detectors; absent in older
files) and ``state_dict``.
No class is pickled, so loading a file can never run code from it.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dfx import distributed
from dfx._version import __version__
from dfx.atomic import atomic_write
from dfx.errors import DfxError, first_few
from dfx.threshold import Calibration

if TYPE_CHECKING:  # torch is imported where a file is read or written: paths check fast
    import torch

    from dfx.data.transforms import Preprocessing

FORMAT_VERSION = 1
"""Version of the file layout this dfx writes and reads."""

BASE_FORMAT = "dfx-base"
DETECTOR_FORMAT = "dfx-detector"
_DESCRIPTIONS = {BASE_FORMAT: "a base-model file", DETECTOR_FORMAT: "a detector file"}


@dataclass
class ModelFile:
    """The contents of a dfx model file."""

    format: str
    """``dfx-base`` (one trained base model) or ``dfx-detector`` (the fused detector)."""
    backbone: str
    """Backbone registry name."""
    classes: list[str]
    """Output class names in index order."""
    preprocessing: Preprocessing
    """How images are turned into input tensors for this model."""
    state_dict: dict
    """The network's weights."""
    config: dict
    """The training configuration(s) that produced it."""
    metrics: dict
    """Metrics measured at training time."""
    dfx_version: str = __version__
    """dfx version that wrote the file."""
    target: str | None = None
    """For a base model, the class it specialises in."""
    architecture: str = "deepfeaturex"
    """For a detector: ``deepfeaturex`` (fused base models) or ``baseline`` (one backbone)."""
    trained_on: list[str] = field(default_factory=list)
    """Short content digests of the images a detector was trained on (its manifest's base and
    fusion roles, :func:`dfx.data.manifest.content_digests`), sorted; empty in older files."""

    @property
    def threshold(self) -> float | None:
        """The threshold on P(fake) calibrated at training time (None in older files)."""
        return Calibration.value_in(self.metrics.get("threshold"))

    @classmethod
    def from_payload(cls, payload: dict, state_dict: dict) -> ModelFile:
        """Inverse of :meth:`to_payload`, with ``state_dict`` as the weights (KeyError,
        TypeError or ValueError for a damaged payload)."""
        from dfx.data.transforms import Preprocessing

        return cls(
            format=payload["format"],
            backbone=payload["backbone"],
            classes=list(payload["classes"]),
            preprocessing=Preprocessing.from_dict(payload["preprocessing"]),
            state_dict=state_dict,
            config=payload.get("config") or {},
            metrics=_current_metrics(payload.get("metrics") or {}),
            dfx_version=payload.get("dfx_version", "unknown"),
            target=payload.get("target"),
            architecture=payload.get("architecture") or "deepfeaturex",
            trained_on=list(payload.get("trained_on") or []),
        )

    def to_payload(self) -> dict:
        """Plain-data form written to disk."""
        return {
            "format": self.format,
            "format_version": FORMAT_VERSION,
            "dfx_version": self.dfx_version,
            "backbone": self.backbone,
            "classes": list(self.classes),
            "target": self.target,
            "architecture": self.architecture,
            "preprocessing": self.preprocessing.to_dict(),
            "config": self.config,
            "metrics": self.metrics,
            "trained_on": list(self.trained_on),
            "state_dict": self.state_dict,
        }


def _current_metrics(metrics: dict) -> dict:
    """``metrics`` under today's keys.

    Fusion detector files written by dfx 0.2.0 and before keep their validation metrics
    under ``fusion_validation`` (baselines and base models always used ``validation``).
    They are read here, the one place where files are read, under the one key
    ``validation``, so that nothing else needs to know the old name.
    """
    if "fusion_validation" in metrics and "validation" not in metrics:
        metrics = {
            ("validation" if key == "fusion_validation" else key): value
            for key, value in metrics.items()
        }
    return metrics


def save_model_file(model_file: ModelFile, path: str | Path) -> Path:
    """Write a model file atomically (in a data-parallel run, rank 0 alone writes it)."""
    path = Path(path)
    if not distributed.is_main():  # atomic_write would discard it: skip the copies too
        return path
    state = {k: v.detach().cpu().contiguous() for k, v in model_file.state_dict.items()}
    payload = model_file.to_payload() | {"state_dict": state}
    with atomic_write(path, "wb") as handle:
        import torch

        torch.save(payload, handle)
    return path


def safe_load(path: str | Path, what: str, hint: str = "") -> object:
    """``torch.load`` with ``weights_only=True``: plain data and tensors, never pickled code.

    A file that needs anything else (a pickled class, a function call) or is not a torch
    file fails with one sentence saying it is not ``what``; ``hint`` ends that sentence.
    """
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's advice to load unsafely is not ours
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        text = str(error)
        code = re.search(r"GLOBAL [\w.]+", text)
        if code:
            reason = (
                f"it holds pickled Python objects ({code.group(0)}), which dfx never loads "
                "because loading them could run code"
            )
        else:
            # Only the unpickler's own words help; torch's other messages advise unsafe loading.
            unpickler = re.search(r"WeightsUnpickler error: ([^\n]+)", text)
            detail = f" ({unpickler.group(1).rstrip('.')})" if unpickler else ""
            reason = f"it is not a PyTorch file, or it is damaged{detail}"
        raise DfxError(
            f"{path} is not {what} that loads safely (weights only): {reason.rstrip('.')}{hint}."
        ) from error


TRAIN_STATE_FORMAT = "dfx-train-state"
"""The format marker of a training resume state (written by :mod:`dfx.engine.train_state`)."""


def check_model_path(path: str | Path) -> None:
    """Fail with one sentence naming what ``path`` is when it cannot be a model file."""
    import stat

    path = Path(path)
    try:
        status = path.stat()
    except FileNotFoundError:
        raise DfxError(f"model file {path} does not exist.") from None
    except OSError as error:
        raise DfxError(f"cannot read model file {path}: {error.strerror or error}.") from None
    if stat.S_ISDIR(status.st_mode):
        raise DfxError(f"model file {path} is a folder; a model is one file (e.g. model.pt).")
    if not stat.S_ISREG(status.st_mode):
        raise DfxError(f"model file {path} is not a regular file (a device, pipe or socket).")
    if status.st_size == 0:
        raise DfxError(f"model file {path} is empty (0 bytes).")


def load_model_file(path: str | Path, expected: str) -> ModelFile:
    """Read a model file of the ``expected`` format, failing with one sentence otherwise."""
    path = Path(path)
    check_model_path(path)
    payload = safe_load(path, "a dfx model file")
    if isinstance(payload, dict) and payload.get("format") == TRAIN_STATE_FORMAT:
        model = path.with_name(path.name.removesuffix(".state.pt") + ".pt")
        raise DfxError(
            f"{path} is a training resume state, not a model; the model that training "
            f"writes beside it is {model}."
        )
    if not isinstance(payload, dict) or payload.get("format") not in _DESCRIPTIONS:
        raise DfxError(f"{path} is not a dfx model file (no dfx format marker).")
    if payload["format"] != expected:
        raise DfxError(
            f"{path} is {_DESCRIPTIONS[payload['format']]}, but {_DESCRIPTIONS[expected]} "
            "is needed here."
        )
    if payload.get("format_version") != FORMAT_VERSION:
        raise DfxError(
            f"{path} has format version {payload.get('format_version')} (written by dfx "
            f"{payload.get('dfx_version')}); this dfx {__version__} reads version "
            f"{FORMAT_VERSION}."
        )
    if not isinstance(payload.get("state_dict"), dict):
        raise DfxError(f"{path} is a damaged dfx model file (its weights are not a mapping).")

    try:
        return ModelFile.from_payload(payload, payload["state_dict"])
    except (KeyError, TypeError, ValueError) as error:
        raise DfxError(f"{path} is a damaged dfx model file (bad field {error}).") from error


def load_weights(network: torch.nn.Module, state_dict: dict, what: str) -> None:
    """Give ``network`` the file's weights (``assign``), or fail with one sentence that says
    which keys are missing, unexpected or of the wrong shape; ``what`` names the file."""
    problems = state_differences(state_dict, network.state_dict())
    if problems:
        raise DfxError(f"{what} does not fit its architecture: {'; '.join(problems)}.")
    try:
        network.load_state_dict(state_dict, assign=True)
    except RuntimeError as error:  # e.g. a dtype that cannot be assigned
        raise DfxError(f"{what} does not fit its architecture: {error}".splitlines()[0]) from error


def state_differences(
    state: dict, expected: dict, name=lambda key: key, optional=lambda key: False
) -> list[str]:
    """How ``state`` differs from ``expected``: counted, named missing, unexpected and
    misshapen keys (none when it fits). ``name`` gives a key as the user knows it;
    ``optional`` keys may be absent."""
    missing = [name(k) for k in expected if k not in state and not optional(k)]
    unexpected = [name(k) for k in state if k not in expected]
    misshapen = [
        f"{name(k)} is {_shape(state[k])} in the file but {list(expected[k].shape)} here"
        for k in expected
        if k in state and _shape(state[k]) != list(expected[k].shape)
    ]
    return [
        f"{len(names)} {what} ({first_few(names)})"
        for what, names in (
            ("missing key(s)", missing),
            ("unexpected key(s)", unexpected),
            ("tensor(s) of the wrong shape", misshapen),
        )
        if names
    ]


def _shape(value) -> list[int] | str:
    import torch

    return list(value.shape) if isinstance(value, torch.Tensor) else "not a tensor"
