"""Choose the device, the autocast precision and the layout once, up front (:class:`Placement`)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import random
import shutil
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dfx import distributed
from dfx.errors import DfxError


@dataclass(frozen=True)
class Placement:
    """Where and how torch does the arithmetic: device, autocast, layout, compilation."""

    device: torch.device
    """The torch device."""
    amp_dtype: torch.dtype | None
    """Autocast dtype (None: full fp32)."""
    channels_last: bool = False
    """Keep image tensors and conv weights channels-last (CUDA: tensor-core convolutions)."""
    compile: bool = False
    """Compile networks with ``torch.compile`` before the first forward pass."""

    @property
    def is_cuda(self) -> bool:
        """True on a CUDA device (pinned memory and non-blocking copies apply)."""
        return self.device.type == "cuda"

    def autocast(self):
        """The autocast context for forward passes (a no-op in fp32)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def prepare(self, network: nn.Module) -> nn.Module:
        """Move ``network`` to the device in the chosen layout, compiled if asked (in place).

        ``nn.Module.compile`` keeps the module and its state-dict keys, so training code and
        checkpoints do not notice the compilation.
        """
        network.to(self.device)
        if self.channels_last:
            network.to(memory_format=torch.channels_last)  # only 4-D weights change
        if self.compile:
            network.compile()
        return network

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """Copy a batch to the device, without blocking from pinned memory, in the layout."""
        if self.channels_last and tensor.dim() == 4:
            return tensor.to(self.device, non_blocking=True, memory_format=torch.channels_last)
        return tensor.to(self.device, non_blocking=True)


def resolve_placement(
    device: str = "auto", precision: str = "auto", compile: bool = False
) -> Placement:
    """Parse ``--device`` (auto, cpu, cuda[:N], mps), ``--precision`` and ``--compile``.

    Under torchrun this also joins the job's process group (:func:`dfx.distributed.setup`):
    each process then runs on its local rank's GPU, or on the CPU.
    """
    name = device.strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        chosen = torch.device(name)
    except RuntimeError:
        raise DfxError(f"device {device!r} is not a device; use auto, cpu or cuda[:N].") from None
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise DfxError(f"device {device}: CUDA is not available on this machine.")
        if chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise DfxError(
                f"device {device}: only {torch.cuda.device_count()} CUDA device(s) here."
            )
    elif chosen.type == "mps" and not torch.backends.mps.is_available():
        raise DfxError(f"device {device}: MPS is not available on this machine.")
    elif chosen.type not in ("cpu", "cuda", "mps"):
        raise DfxError(f"device {device!r} is not supported; use auto, cpu or cuda[:N].")
    chosen = distributed.setup(chosen)
    if compile:
        _check_compile(chosen)
    if chosen.type == "cuda":
        # Fixed input sizes: let cuDNN time its algorithms once and keep the fastest.
        torch.backends.cudnn.benchmark = True
    return Placement(
        chosen, _amp_dtype(chosen, precision), channels_last=chosen.type == "cuda", compile=compile
    )


def _check_compile(device: torch.device) -> None:
    """Fail up front, in one sentence, where ``torch.compile`` cannot work."""
    import torch._dynamo

    if not torch._dynamo.is_dynamo_supported():
        raise DfxError("torch.compile does not support this Python; run without compiling.")
    if device.type == "cpu" and not any(
        shutil.which(name) for name in (os.environ.get("CXX", "g++"), "c++", "clang++")
    ):
        raise DfxError("compiling on CPU needs a C++ compiler (g++ or clang++); none was found.")
    if device.type == "cuda" and importlib.util.find_spec("triton") is None:
        raise DfxError("compiling on CUDA needs the triton package; install it, or do not compile.")
    if device.type == "mps":
        raise DfxError("compiling is not supported on MPS; run without compiling.")
    _import_cpp_extension_quietly()


def _import_cpp_extension_quietly() -> None:
    """Import torch's C++ extension module, which compiling needs, without its CUDA warning.

    On import it logs "No CUDA runtime is found, using CUDA_HOME=..." wherever a CUDA
    toolkit is installed without a GPU; a CPU run needs no CUDA runtime, so that is noise.
    """
    import logging

    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        import torch.utils.cpp_extension  # noqa: F401
    finally:
        logger.setLevel(level)


def _amp_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    precision = precision.lower()
    if precision == "auto":
        if device.type != "cuda":
            return None  # CPUs train in fp32: exact, and what the tests pin down.
        # Native bf16 (tensor cores) from Ampere on; older GPUs only emulate it, slowly.
        native_bf16 = torch.cuda.get_device_capability(device) >= (8, 0)
        return torch.bfloat16 if native_bf16 else torch.float16
    table = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in table:
        raise DfxError(f"precision {precision!r} is not one of auto, fp32, bf16, fp16.")
    return table[precision]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so that a run can be repeated."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def default_workers() -> int:
    """DataLoader workers: leave one usable core for the main process, at most 16.

    A GPU evaluating ~2,500 images/s needs about that many decoding processes; a CPU does
    not mind, as decoding is a small share of its work. Under torchrun the processes of one
    machine share its CPUs, unless the launcher has already bound each to its own.
    """
    cpus, local = usable_cpus(), distributed.local_processes()
    if cpus > (os.cpu_count() or cpus) // local:  # not bound to its own share: split it
        cpus //= local
    return max(0, min(16, cpus - 1))


def usable_cpus() -> int:
    """CPUs this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1
