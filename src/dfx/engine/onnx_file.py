"""Detector files in ONNX: the whole network as one graph, described by its metadata.

A ``.onnx`` detector holds the network (three backbones and the fusion head, or one
baseline backbone) with a dynamic batch axis, and in ``metadata_props`` everything a
``.pt`` detector file says besides its weights: classes, backbone, architecture,
preprocessing, calibrated threshold, training metrics, the dfx version and the sha256 of
the ``.pt`` it came from. ``dfx predict|evaluate|robustness --model model.onnx`` need
nothing else.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from dfx._version import __version__
from dfx.atomic import atomic_write
from dfx.checkpoint import DETECTOR_FORMAT, ModelFile
from dfx.errors import DfxError
from dfx.extras import require
from dfx.fingerprint import file_sha256

OPSET = 17
"""ONNX opset of exported graphs (ONNX Runtime ≥ 1.12, OpenVINO ≥ 2022.1, TensorRT ≥ 8.5)."""

INPUT_NAME, OUTPUT_NAME = "images", "logits"
"""Names of the graph's input (B, 3, H, W) float32 and output (B, 3) class logits."""

MARKER = "dfx.format"
"""The metadata key that makes an ONNX file a dfx detector."""


def graph_bytes(network: nn.Module, input_size: int) -> bytes:
    """``network`` (eval mode, on the CPU, fp32) as a serialised ONNX graph, batch axis dynamic."""
    network = network.eval()
    example = torch.zeros(2, 3, input_size, input_size)
    buffer = io.BytesIO()
    fastpath = torch.backends.mha.get_fastpath_enabled()
    try:
        # nn.MultiheadAttention's fused inference kernel (ViT) has no ONNX form; the
        # unfused path computes the same attention from exportable operators.
        torch.backends.mha.set_fastpath_enabled(False)
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's notes on tracing are not ours
            # The TorchScript exporter: several times faster than the dynamo one on these
            # networks and its graphs run identically in ONNX Runtime.
            torch.onnx.export(
                network,
                (example,),
                buffer,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,
            )
    except Exception as error:  # the exporter raises many types; each means "cannot"
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DfxError(f"this network does not export to ONNX: {reason[:300]}") from error
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return buffer.getvalue()


def metadata_of(model_file: ModelFile, source_sha256: str) -> dict[str, str]:
    """The metadata of an exported detector: readable keys and the model file's fields."""
    described = model_file.to_payload()
    described.pop("state_dict")
    return {
        MARKER: DETECTOR_FORMAT,
        "dfx.version": __version__,
        "dfx.source_sha256": source_sha256,
        "dfx.backbone": model_file.backbone,
        "dfx.architecture": model_file.architecture,
        "dfx.classes": json.dumps(list(model_file.classes)),
        "dfx.preprocessing": json.dumps(model_file.preprocessing.to_dict()),
        "dfx.threshold": json.dumps(model_file.threshold),
        "dfx.model_file": json.dumps(described),
    }


def set_metadata(model, entries: dict[str, str]) -> None:
    """Add or replace ``metadata_props`` entries of an ``onnx.ModelProto``."""
    kept = [p for p in model.metadata_props if p.key not in entries]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in entries.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file, failing with one sentence if it is not one."""
    require("onnx", "onnx")
    import onnx

    path = Path(path)
    if not path.is_file():
        raise DfxError(f"model file {path} does not exist.")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf's DecodeError and friends
        raise DfxError(
            f"{path} is not a readable ONNX file (it is damaged or not ONNX)."
        ) from error
    if not len(model.graph.input):
        raise DfxError(f"{path} is not a readable ONNX file (it holds no graph).")
    return {p.key: p.value for p in model.metadata_props}


def read_onnx_detector(path: str | Path) -> ModelFile:
    """The model file an ONNX detector was exported from, without its weights."""
    metadata = read_metadata(path)
    if metadata.get(MARKER) != DETECTOR_FORMAT or "dfx.model_file" not in metadata:
        raise DfxError(
            f"{path} is an ONNX model but not a dfx detector (it has no dfx metadata); "
            "make one with 'dfx export'."
        )
    try:
        payload = json.loads(metadata["dfx.model_file"])
        return ModelFile.from_payload(payload, state_dict={})
    except (KeyError, TypeError, ValueError) as error:
        raise DfxError(f"{path} has damaged dfx metadata ({error}).") from error


def cache_dir() -> Path:
    """Where graphs exported on the fly are kept: $DFX_CACHE_DIR, else the user cache."""
    if os.environ.get("DFX_CACHE_DIR"):
        return Path(os.environ["DFX_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dfx"


def cached_graph(source: Path, network: nn.Module, model_file: ModelFile) -> Path:
    """The ONNX graph of a ``.pt`` detector, exported once and kept in :func:`cache_dir`.

    The cache key is the file's sha256, the dfx and torch versions and the opset, so a
    changed file or a new exporter exports again.
    """
    digest = file_sha256(source)
    key = f"{digest[:24]}-dfx{__version__}-torch{torch.__version__.split('+')[0]}-op{OPSET}"
    path = cache_dir() / "onnx" / f"{key}.onnx"
    if path.is_file():
        return path
    require("onnx", "onnx")
    import onnx

    model = onnx.load_from_string(graph_bytes(network, model_file.preprocessing.input_size))
    set_metadata(model, metadata_of(model_file, digest))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "wb") as handle:
            handle.write(model.SerializeToString())
    except OSError as error:
        raise DfxError(
            f"cannot write the exported graph to the cache {path.parent} ({error.strerror}); "
            "set DFX_CACHE_DIR to a writable folder."
        ) from error
    return path
