"""The session backends: ONNX Runtime and OpenVINO behind the torch module's call shape.

A detector's network is always a callable ``images (B, 3, H, W) → logits (B, 3)``. With
the torch backend it is the ``nn.Module`` itself; with ONNX Runtime or OpenVINO it is a
:class:`SessionNetwork`, a module without parameters whose forward pass hands the batch
to the session. Everything that runs a detector (prediction, evaluation, the robustness
runs) therefore works with every backend unchanged. Which backend runs is decided in
:mod:`dfx.models.inference_settings`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dfx.errors import DfxError
from dfx.extras import require


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


def session_precision(backend: str, precision: str) -> str:
    """``--precision`` for a session backend, checked before any export or compilation.

    auto and fp32 are fp32 (exact); bf16 is OpenVINO's inference hint, on CPUs that
    compute bf16 natively.
    """
    precision = precision.strip().lower()
    if precision in ("auto", "fp32"):
        return "fp32"
    if precision != "bf16" or backend == "onnxruntime":
        others = "openvino or torch" if backend == "onnxruntime" else "torch"
        raise DfxError(
            f"the {backend} runtime runs fp32{' or bf16' if backend == 'openvino' else ' only'}; "
            f"use the {others} `runtime` for `precision` {precision}."
        )
    if not cpu_has_native_bf16():
        raise DfxError(
            "`precision` bf16 with OpenVINO needs a CPU with native bf16 (AVX-512-bf16 or "
            "AMX); this one has neither."
        )
    return precision


def session_network(
    backend: str, graph: Path, threads: int, device: torch.device, precision: str
) -> SessionNetwork:
    """The network of an ONNX graph file under ``backend`` (onnxruntime or openvino)."""
    build = onnxruntime_network if backend == "onnxruntime" else openvino_network
    return build(graph, threads, device, precision)


class SessionNetwork(nn.Module):
    """An ONNX Runtime or OpenVINO session with a torch module's call shape: images → logits.

    It has no parameters, so moving it or changing its layout does nothing; inputs are
    made contiguous float32 NCHW arrays, the layout the exported graph expects.
    """

    def __init__(self, backend: str, run: Callable[[np.ndarray], np.ndarray], precision: str):
        super().__init__()
        self.backend = backend
        """``onnxruntime`` or ``openvino``."""
        self.precision = precision
        """``fp32`` (exact) or ``bf16`` (OpenVINO's bf16 inference hint)."""
        self._run = run

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(images.detach().to("cpu", torch.float32).numpy())
        return torch.from_numpy(np.asarray(self._run(array), dtype=np.float32))

    def extra_repr(self) -> str:
        return f"backend={self.backend}, precision={self.precision}"


def onnxruntime_network(
    graph: str | Path | bytes, threads: int, device: torch.device, precision: str
) -> SessionNetwork:
    """An ONNX Runtime session over ``graph`` (a file or the serialised model).

    On the CPU it runs fp32 only. On CUDA it takes TensorRT, then CUDA, from the installed
    onnxruntime-gpu package.
    """
    require("onnx", "onnxruntime")
    import onnxruntime as ort

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
    require("openvino", "openvino")
    import openvino as ov

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
