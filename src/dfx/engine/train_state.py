"""The resume state of a training run: saved after every epoch, loaded with weights only.

Everything is plain data or tensors (random-generator states included), so the file
loads with ``torch.load(..., weights_only=True)`` and can never run code.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dfx._version import __version__
from dfx.atomic import atomic_write
from dfx.checkpoint import TRAIN_STATE_FORMAT, safe_load
from dfx.errors import DfxError

STATE_FORMAT = TRAIN_STATE_FORMAT
STATE_FORMAT_VERSION = 1

RESUMABLE_CHANGES = frozenset(
    {"epochs", "device", "workers", "max_pixels", "eval_batch_size", "extract_batch_size"}
)
"""Settings that may differ between a run and its resumption (they change no arithmetic
of the epochs already done)."""


@dataclass
class TrainState:
    """Everything needed to continue a run after its last completed epoch."""

    epoch: int
    """Last completed epoch."""
    model: dict
    """The network's weights after that epoch."""
    optimizer: dict
    """The optimizer's state dict."""
    scheduler: dict | None
    """The learning-rate scheduler's state dict (None without one)."""
    scaler: dict
    """The fp16 gradient scaler's state dict."""
    rng: dict
    """Random-generator states: torch CPU (and CUDA), NumPy and Python."""
    best_criterion: float
    """Lowest validation (or training) loss so far."""
    best_epoch: int
    """Its epoch (0: none yet)."""
    best_state: dict
    """Its weights."""
    history: list[dict]
    """Per-epoch records so far."""
    failures: list[dict] = field(default_factory=list)
    """Unreadable inputs met so far (index, reason, source)."""
    config: dict = field(default_factory=dict)
    """The settings of the run, checked on resumption."""


def capture_rng() -> dict:
    """The global random-generator states as tensors and plain data."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    """Put back what :func:`capture_rng` recorded."""
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    python_state = state["python"]
    random.setstate(
        (python_state["version"], tuple(python_state["internal"]), python_state["gauss_next"])
    )
    if "cuda" in state and torch.cuda.is_available():
        # A resumed run may see fewer GPUs (CUDA_VISIBLE_DEVICES, another node).
        for index, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, index)


def save_state(state: TrainState, path: Path) -> None:
    """Write the state file atomically (a kill mid-write leaves the previous one)."""
    payload = {
        "format": STATE_FORMAT,
        "format_version": STATE_FORMAT_VERSION,
        "dfx_version": __version__,
        **state.__dict__,
    }
    with atomic_write(path, "wb") as handle:
        torch.save(payload, handle)


def require_state(path: Path | None) -> Path:
    """``path`` when it holds a saved training state to resume from; one sentence if not."""
    if path is None or not Path(path).is_file():
        raise DfxError(
            f"there is no saved training state {path} to resume from; start afresh instead."
        )
    return Path(path)


def load_state(path: Path) -> TrainState:
    """Read a state file written by :func:`save_state`, failing with one sentence otherwise."""
    payload = safe_load(path, "a dfx training state")
    if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
        raise DfxError(f"{path} is not a dfx training-state file.")
    if payload.get("format_version") != STATE_FORMAT_VERSION:
        raise DfxError(
            f"{path} has training-state version {payload.get('format_version')} (written by "
            f"dfx {payload.get('dfx_version')}); this dfx {__version__} reads version "
            f"{STATE_FORMAT_VERSION}, so start afresh without `resume`."
        )
    fields = TrainState.__dataclass_fields__
    try:
        return TrainState(**{k: v for k, v in payload.items() if k in fields})
    except TypeError as error:
        raise DfxError(f"{path} is a damaged dfx training-state file ({error}).") from error


def check_compatible(saved: dict, current: dict, path: Path) -> None:
    """Fail with one sentence when the saved run used other settings than this one."""
    keys = sorted((set(saved) | set(current)) - RESUMABLE_CHANGES)
    differences = [
        f"{key} {saved.get(key)!r} then, {current.get(key)!r} now"
        for key in keys
        if saved.get(key) != current.get(key)
    ]
    if differences:
        raise DfxError(
            f"cannot resume from {path}: the run used other settings ("
            + "; ".join(differences[:4])
            + (" ..." if len(differences) > 4 else "")
            + "); use the same ones, or start afresh."
        )


def load_resume_state(state_path: Path | None, config: dict, epochs: int) -> TrainState:
    """The saved state at ``state_path``, checked against this run's ``config`` and ``epochs``."""
    state = load_state(require_state(state_path))
    check_compatible(state.config, config, state_path)
    if state.epoch > epochs:
        raise DfxError(
            f"{state_path} already holds {state.epoch} epochs, more than the {epochs} asked for."
        )
    return state


def restore_training(state: TrainState, model, optimizer, scheduler, scaler) -> None:
    """Put the saved weights, optimizer, scheduler, scaler and random states back."""
    try:
        model.load_state_dict(state.model)
        optimizer.load_state_dict(state.optimizer)
        if scheduler is not None and state.scheduler is not None:
            scheduler.load_state_dict(state.scheduler)
        scaler.load_state_dict(state.scaler)
        restore_rng(state.rng)
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as error:
        reason = (str(error).splitlines() or [""])[0] or type(error).__name__
        raise DfxError(
            f"the saved training state does not fit this run or is damaged ({reason}); "
            "start afresh."
        ) from error
