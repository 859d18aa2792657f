"""The inference runtimes: torch, ONNX Runtime and OpenVINO behind one call shape.

A detector's network is always a callable ``images (B, 3, H, W) → logits (B, 3)``. With
the torch runtime it is the ``nn.Module`` itself; with ONNX Runtime or OpenVINO it is a
:class:`SessionNetwork`, a module without parameters whose forward pass hands the batch
to the session. Everything that runs a detector (prediction, evaluation, the robustness
runs) therefore works with every runtime unchanged.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dfx.errors import DfxError
from dfx.extras import MissingExtra

RUNTIMES: tuple[str, ...] = ("auto", "torch", "onnxruntime", "openvino")
"""Values of ``--runtime``."""

SESSION_RUNTIMES: tuple[str, ...] = ("onnxruntime", "openvino")
"""Runtimes that run an ONNX graph rather than the torch module."""

_PACKAGES = {
    "onnxruntime": ("onnxruntime", "onnx"),
    "openvino": ("openvino", "openvino"),
}


def check_runtime_name(name: str) -> str:
    """``name`` in lower case, or one sentence listing the runtimes."""
    name = name.strip().lower()
    if name not in RUNTIMES:
        raise DfxError(f"`runtime` {name!r} is not one of {', '.join(RUNTIMES)}.")
    return name


def is_installed(runtime: str) -> bool:
    """Whether ``runtime``'s package can be imported (torch always can)."""
    if runtime == "torch":
        return True
    return importlib.util.find_spec(_PACKAGES[runtime][0]) is not None


def require(runtime: str):
    """Import ``runtime``'s package, or fail with one sentence naming the extra to install."""
    module, extra = _PACKAGES[runtime]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(extra) from None


def require_onnx():
    """Import the ``onnx`` package (export and model metadata), or one sentence naming the extra."""
    try:
        return importlib.import_module("onnx")
    except ImportError:
        raise MissingExtra("onnx") from None


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512-bf16, AMX or Arm's bf16 extension)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags = set(line.split(":", 1)[1].split())
            return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    return False


def session_precision(runtime: str, precision: str) -> str:
    """``--precision`` for a session runtime, checked before any export or compilation.

    auto and fp32 are fp32 (exact); bf16 is OpenVINO's inference hint, on CPUs that
    compute bf16 natively.
    """
    precision = precision.strip().lower()
    if precision in ("auto", "fp32"):
        return "fp32"
    if precision != "bf16" or runtime == "onnxruntime":
        others = "openvino or torch" if runtime == "onnxruntime" else "torch"
        raise DfxError(
            f"the {runtime} runtime runs fp32{' or bf16' if runtime == 'openvino' else ' only'}; "
            f"use the {others} `runtime` for `precision` {precision}."
        )
    if not cpu_has_native_bf16():
        raise DfxError(
            "`precision` bf16 with OpenVINO needs a CPU with native bf16 (AVX-512-bf16 or "
            "AMX); this one has neither."
        )
    return precision


def session_network(
    runtime: str, graph: Path, threads: int, device: torch.device, precision: str
) -> SessionNetwork:
    """The network of an ONNX graph file under ``runtime`` (onnxruntime or openvino)."""
    build = onnxruntime_network if runtime == "onnxruntime" else openvino_network
    return build(graph, threads, device, precision)


class SessionNetwork(nn.Module):
    """An ONNX Runtime or OpenVINO session with a torch module's call shape: images → logits.

    It has no parameters, so moving it or changing its layout does nothing; inputs are
    made contiguous float32 NCHW arrays, the layout the exported graph expects.
    """

    def __init__(self, runtime: str, run: Callable[[np.ndarray], np.ndarray], precision: str):
        super().__init__()
        self.runtime = runtime
        """``onnxruntime`` or ``openvino``."""
        self.precision = precision
        """``fp32`` (exact) or ``bf16`` (OpenVINO's bf16 inference hint)."""
        self._run = run

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(images.detach().to("cpu", torch.float32).numpy())
        return torch.from_numpy(np.asarray(self._run(array), dtype=np.float32))

    def extra_repr(self) -> str:
        return f"runtime={self.runtime}, precision={self.precision}"


def onnxruntime_network(
    graph: str | Path | bytes, threads: int, device: torch.device, precision: str
) -> SessionNetwork:
    """An ONNX Runtime session over ``graph`` (a file or the serialised model).

    On the CPU it runs fp32 only. On CUDA it takes TensorRT, then CUDA, from the installed
    onnxruntime-gpu package.
    """
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda":
        available = ort.get_available_providers()
        gpu = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available]
        if not gpu:
            raise DfxError(
                "ONNX Runtime on CUDA needs onnxruntime-gpu "
                "(pip install onnxruntime-gpu in place of onnxruntime)."
            )
        providers = gpu + providers
    source = str(graph) if isinstance(graph, Path) else graph
    try:
        session = ort.InferenceSession(source, options, providers=providers)
    except Exception as error:  # ONNX Runtime raises its own exception types
        raise DfxError(
            f"ONNX Runtime cannot load the detector graph: {_first_line(error)}."
        ) from error
    name = session.get_inputs()[0].name

    def run(images: np.ndarray) -> np.ndarray:
        return session.run(None, {name: images})[0]

    return SessionNetwork("onnxruntime", run, precision)


def openvino_network(graph: Path, threads: int, device: torch.device, precision: str):
    """An OpenVINO CPU model compiled from an ONNX file, fp32 or with the bf16 hint."""
    ov = require("openvino")
    if device.type != "cpu":
        raise DfxError("the openvino runtime runs on the CPU here; use `device` cpu.")
    hints = {"fp32": "f32", "bf16": "bf16"}
    core = ov.Core()
    config = {
        "INFERENCE_PRECISION_HINT": hints[precision],
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY",
    }
    try:
        compiled = core.compile_model(core.read_model(str(graph)), "CPU", config)
    except Exception as error:  # OpenVINO raises RuntimeError subclasses of its own
        raise DfxError(f"OpenVINO cannot load the detector graph: {_first_line(error)}.") from error
    request = compiled.create_infer_request()
    output = compiled.output(0)

    def run(images: np.ndarray) -> np.ndarray:
        return request.infer({0: images})[output]

    return SessionNetwork("openvino", run, precision)


def _first_line(error: Exception) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0].rstrip(".")[:300]
