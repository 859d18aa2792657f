"""``dfx export``: a detector file as one ONNX graph, checked against the torch network."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from dfx.atomic import atomic_write
from dfx.engine.detector import Detector
from dfx.engine.onnx_file import graph_bytes, metadata_of, set_metadata
from dfx.errors import DfxError
from dfx.extras import require
from dfx.fingerprint import file_sha256
from dfx.progress import ProgressReporter, or_null

FORMATS: tuple[str, ...] = ("onnx",)
"""Export formats ``dfx export --format`` writes."""

PARITY_BATCHES: tuple[int, ...] = (1, 3)
"""Batch sizes of the random inputs the parity check runs: the batch axis must be dynamic."""


@dataclass
class ExportResult:
    """What ``dfx export`` wrote and how closely the graph follows the torch network."""

    path: str
    """The written file."""
    format: str
    """The format (onnx)."""
    backbone: str
    """The detector's backbone."""
    architecture: str
    """deepfeaturex (three backbones and the fusion head) or baseline."""
    input_size: int
    """Side of the square input the graph takes (the batch axis is dynamic)."""
    source_sha256: str
    """sha256 of the ``.pt`` file the graph came from."""
    parity_inputs: int
    """Random inputs on which ONNX Runtime and torch were compared."""
    max_abs_dp: float
    """Largest difference of any class probability between ONNX Runtime and torch."""
    size_bytes: int
    """Size of the written file."""

    def to_dict(self) -> dict:
        """Plain-data form for JSON."""
        return asdict(self)


def export_detector(
    model: str | Path,
    out: str | Path,
    *,
    format: str = "onnx",
    seed: int = 0,
    progress: ProgressReporter | None = None,
) -> ExportResult:
    """Export a ``.pt`` detector to ``out`` and check it on random inputs with ONNX Runtime.

    The maximum probability difference is stored in the file's metadata
    (``dfx.parity_max_abs_dp``) and returned.
    """
    if format not in FORMATS:
        raise DfxError(f"`format` {format!r} is not one of {', '.join(FORMATS)}.")
    model, out = Path(model), Path(out)
    if model.suffix.lower() == ".onnx":
        raise DfxError(f"{model} is already an ONNX graph; export reads a .pt detector file.")
    require("onnx")  # onnx and ONNX Runtime, for the parity check
    import onnx

    progress = or_null(progress)
    detector = Detector.load(model, device="cpu", precision="fp32", runtime="torch")
    file = detector.model_file
    size = file.preprocessing.input_size
    progress.start("export", 3, f"export {file.backbone} to ONNX")
    try:
        graph = onnx.load_from_string(graph_bytes(detector.network, size))
    except DfxError as error:
        raise DfxError(f"{file.backbone} detectors cannot be exported: {error}") from error
    progress.advance("export", 1)
    source_sha256 = file_sha256(model)
    set_metadata(graph, metadata_of(file, source_sha256))
    max_abs_dp = _parity(detector, graph.SerializeToString(), size, seed)
    progress.advance("export", 1)
    set_metadata(graph, {"dfx.parity_max_abs_dp": repr(max_abs_dp)})
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out, "wb") as handle:
        handle.write(graph.SerializeToString())
    progress.advance("export", 1)
    progress.finish("export")
    return ExportResult(
        path=str(out),
        format=format,
        backbone=file.backbone,
        architecture=file.architecture,
        input_size=size,
        source_sha256=source_sha256,
        parity_inputs=sum(PARITY_BATCHES),
        max_abs_dp=max_abs_dp,
        size_bytes=out.stat().st_size,
    )


def _parity(detector: Detector, graph: bytes, size: int, seed: int) -> float:
    """Max |Δp| between ONNX Runtime and torch (fp32) on random normalised images."""
    import onnxruntime as ort

    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    for batch in PARITY_BATCHES:
        images = torch.randn(batch, 3, size, size, generator=generator)
        with torch.inference_mode():
            expected = torch.softmax(detector.network(images), dim=1).numpy()
        logits = torch.from_numpy(session.run(None, {name: images.numpy()})[0])
        got = torch.softmax(logits, dim=1).numpy()
        if got.shape != expected.shape:
            raise DfxError(
                f"the exported graph gives outputs of shape {got.shape}, not {expected.shape}."
            )
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst
