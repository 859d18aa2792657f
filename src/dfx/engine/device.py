"""Choose the device and the autocast precision once, up front."""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass

import numpy as np
import torch

from dfx.errors import DfxError


@dataclass(frozen=True)
class Runtime:
    """Where and how the arithmetic runs."""

    device: torch.device
    """The torch device."""
    amp_dtype: torch.dtype | None
    """Autocast dtype (None: full fp32)."""

    @property
    def is_cuda(self) -> bool:
        """True on a CUDA device (pinned memory and non-blocking copies apply)."""
        return self.device.type == "cuda"

    def autocast(self):
        """The autocast context for forward passes (a no-op in fp32)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)


def resolve_runtime(device: str = "auto", precision: str = "auto") -> Runtime:
    """Parse ``--device`` (auto, cpu, cuda[:N], mps) and ``--precision``."""
    name = device.strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        chosen = torch.device(name)
    except RuntimeError:
        raise DfxError(f"--device {device!r} is not a device; use auto, cpu or cuda[:N].") from None
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise DfxError(f"--device {device}: CUDA is not available on this machine.")
        if chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise DfxError(
                f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here."
            )
    elif chosen.type == "mps" and not torch.backends.mps.is_available():
        raise DfxError(f"--device {device}: MPS is not available on this machine.")
    elif chosen.type not in ("cpu", "cuda", "mps"):
        raise DfxError(f"--device {device!r} is not supported; use auto, cpu or cuda[:N].")
    return Runtime(chosen, _amp_dtype(chosen, precision))


def _amp_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    precision = precision.lower()
    if precision == "auto":
        if device.type != "cuda":
            return None  # CPUs train in fp32: exact, and what the tests pin down.
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    table = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in table:
        raise DfxError(f"--precision {precision!r} is not one of auto, fp32, bf16, fp16.")
    return table[precision]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so that a run can be repeated."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def default_workers() -> int:
    """DataLoader workers: leave one core for the main process, at most 8."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))
