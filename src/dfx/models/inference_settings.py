"""How a detector runs by default: the inference settings beside the architecture registry.

:mod:`dfx.models.registry` says what a backbone *is* (its feature size, input, layers);
this module says how a detector of it *runs* when the user asks for nothing: the backend
that does the arithmetic (``--runtime``), the measured CPU tuning of each family and every
default batch size. Torch-free, so the command line states these defaults in its help
without loading torch; :class:`dfx.engine.detector.Detector` is the one that applies them.
"""

from __future__ import annotations

from dataclasses import dataclass

from dfx import extras
from dfx.errors import DfxError
from dfx.models.registry import get_spec

BACKENDS: tuple[str, ...] = ("auto", "torch", "onnxruntime", "openvino")
"""Values of ``--runtime``: what does a detector's arithmetic."""

SESSION_BACKENDS: tuple[str, ...] = ("onnxruntime", "openvino")
"""Backends that run an ONNX graph rather than the torch module."""

BACKEND_EXTRAS: dict[str, str] = {"onnxruntime": "onnx", "openvino": "openvino"}
"""The extra (:mod:`dfx.extras`) that brings each session backend (its package has the
backend's name)."""

CUDA_BATCH_SIZE = 256
"""Images per inference step on a GPU when none is given (on a CPU: the backbone's own)."""

OTHER_DEVICE_BATCH_SIZE = 32
"""Images per inference step on a device that is neither a CPU nor CUDA (MPS)."""

EXPLAIN_BATCH_SIZES: dict[str, int] = {"cpu": 8, "cuda": 32}
"""Images per explanation step (gradients are kept, so fewer than for plain inference)."""


@dataclass(frozen=True)
class InferenceSettings:
    """A backbone family's measured CPU defaults (benchmarks/cpu_defaults.py, cpu_inference.py)."""

    cpu_batch_size: int = 32
    """Images per inference step on a CPU when none is asked for."""
    cpu_channels_last: bool = False
    """Run channels-last on a CPU (images and weights), where measured to be faster."""
    cpu_onnxruntime: bool = False
    """``--runtime auto`` runs a ``.pt`` of it on a CPU through ONNX Runtime (measured faster)."""

    def to_dict(self) -> dict:
        """The keys ``dfx backbones --json`` lists beside the registry's facts."""
        return {
            "cpu_batch_size": self.cpu_batch_size,
            "cpu_channels_last": self.cpu_channels_last,
            "cpu_onnxruntime": self.cpu_onnxruntime,
        }


# Per family (docs/performance.md): small batches stay in cache; channels-last lets oneDNN
# skip reorders in DenseNet and EfficientNet, while it does not help ResNet and ViT; ONNX
# Runtime's fused graph beat torch (exactly) where it was measured, on DenseNet.
_DENSENET = InferenceSettings(4, cpu_channels_last=True, cpu_onnxruntime=True)
_EFFICIENTNET = InferenceSettings(4, cpu_channels_last=True)
_RESNET = InferenceSettings(4)
_VIT = InferenceSettings(8)

SETTINGS: dict[str, InferenceSettings] = {
    **dict.fromkeys(("densenet121", "densenet161", "densenet169", "densenet201"), _DENSENET),
    **dict.fromkeys(("efficientnet_b0", "efficientnet_b4"), _EFFICIENTNET),
    **dict.fromkeys(
        ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext101"), _RESNET
    ),
    **dict.fromkeys(("vit_b_16", "vit_b_32"), _VIT),
    # Tiny inputs: a large batch amortises the per-step overhead.
    "tiny": InferenceSettings(),
}
"""Every registered backbone's inference settings, by name (tests hold it to the registry)."""


def settings_for(backbone: str) -> InferenceSettings:
    """The inference settings of ``backbone``; an unknown name fails listing the valid ones."""
    return SETTINGS[get_spec(backbone).name]


def default_batch_size(backbone: str, device_type: str) -> int:
    """Images per inference step when none is asked for: the backbone's measured CPU batch on
    a CPU, :data:`CUDA_BATCH_SIZE` on CUDA."""
    if device_type == "cpu":
        return settings_for(backbone).cpu_batch_size
    return CUDA_BATCH_SIZE if device_type == "cuda" else OTHER_DEVICE_BATCH_SIZE


def explain_batch_size(device_type: str) -> int:
    """Images per explanation step when none is asked for."""
    return EXPLAIN_BATCH_SIZES["cuda" if device_type == "cuda" else "cpu"]


def batch_size_help() -> str:
    """The inference batch-size default in words (for help and docs)."""
    paper = sorted({s.cpu_batch_size for name, s in SETTINGS.items() if name != "tiny"})
    cpu = f"{paper[0]}" if len(paper) == 1 else f"{paper[0]}-{paper[-1]}"
    return (
        f"the backbone's measured CPU batch, {cpu} for the paper's backbones and "
        f"{SETTINGS['tiny'].cpu_batch_size} for tiny; {CUDA_BATCH_SIZE} on CUDA"
    )


def explain_batch_size_help() -> str:
    """The explanation batch-size default in words (for help and docs)."""
    return f"{EXPLAIN_BATCH_SIZES['cpu']} on CPU, {EXPLAIN_BATCH_SIZES['cuda']} on CUDA"


def check_backend_name(name: str) -> str:
    """``name`` in lower case, or one sentence listing the values of ``--runtime``."""
    name = name.strip().lower()
    if name not in BACKENDS:
        raise DfxError(f"`runtime` {name!r} is not one of {', '.join(BACKENDS)}.")
    return name


def require_backend(backend: str) -> None:
    """Fail with one sentence naming the extra unless ``backend``'s package is installed."""
    if backend != "torch":
        extras.require(BACKEND_EXTRAS[backend], backend)


def is_installed(backend: str) -> bool:
    """Whether ``backend``'s package can be imported (torch always can)."""
    if backend == "torch":
        return True
    return extras.is_installed(BACKEND_EXTRAS[backend], backend)


def choose_backend(
    runtime: str,
    is_onnx: bool,
    precision: str = "auto",
    backbone: str | None = None,
    device: str = "auto",
    compile: bool = False,
) -> str:
    """The backend ``--runtime`` ``auto`` stands for, or ``runtime`` itself once checked.

    ``auto`` runs a ``.onnx`` file with ONNX Runtime, or with OpenVINO when ONNX Runtime is
    not installed or ``precision`` is bf16 (which ONNX Runtime does not run on the CPU). A
    ``.pt`` file runs with torch, except an exact (fp32) CPU run of a backbone whose
    settings measured ONNX Runtime faster, when ONNX Runtime is installed.
    """
    name = check_backend_name(runtime)
    if name != "auto":
        return name
    if not is_onnx:
        faster = (
            backbone is not None
            and settings_for(backbone).cpu_onnxruntime
            and precision.strip().lower() in ("auto", "fp32")
            and not compile
            and _runs_on_cpu(device)
            and is_installed("onnxruntime")
        )
        return "onnxruntime" if faster else "torch"
    order = ("openvino", "onnxruntime") if precision.lower() == "bf16" else SESSION_BACKENDS
    installed = [candidate for candidate in order if is_installed(candidate)]
    return installed[0] if installed else order[0]


def _runs_on_cpu(device: str) -> bool:
    name = device.strip().lower()
    if name == "cpu":
        return True
    if name != "auto":
        return False
    import torch  # here: only an automatic device needs to ask for CUDA

    return not torch.cuda.is_available()
