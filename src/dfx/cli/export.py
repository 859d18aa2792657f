"""dfx export: a detector file as one ONNX graph for ONNX Runtime, OpenVINO or TensorRT."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from dfx.cli.console import RichProgress, notice
from dfx.cli.errors import handle_errors
from dfx.cli.model_reference import fetch_model
from dfx.cli.options import JsonFlag, ModelOption, Sha256Option, artifact_option
from dfx.cli.outputs import check_outputs, emit_json
from dfx.extras import install_command

EPILOG = """\
[bold]Examples[/bold]

  dfx export --model model.pt --out model.onnx
  dfx predict --model model.onnx photos/                      # ONNX Runtime, nothing else needed
  dfx evaluate --model model.onnx -m manifest.csv --runtime openvino
  dfx export -M model.pt --out model.onnx --json | jq .max_abs_dp

The whole detector (three backbones and the fusion head, or a baseline) becomes one
graph, input 'images' (B, 3, H, W) float32 after the model's preprocessing, output
'logits' (B, 3) in the order dm, gan, real; the batch axis is dynamic. The classes,
backbone, preprocessing, calibrated threshold, dfx version and the .pt file's sha256 go
into the ONNX metadata. Export runs both networks on a few random inputs and prints and
stores the largest class-probability difference (dfx.parity_max_abs_dp). Needs
{hint}.
""".format(hint=escape(install_command("onnx")))


@handle_errors
def export_command(
    model: ModelOption,
    out: Annotated[Path, artifact_option(help="The file to write (model.onnx).")],
    format: Annotated[str, typer.Option("--format", help="Export format: onnx.")] = "onnx",
    sha256: Sha256Option = None,
    as_json: JsonFlag = False,
) -> None:
    """Export a detector to ONNX, checked against the torch network."""
    from dfx.engine.export import export_detector

    check_outputs({"--output": out})
    source = fetch_model(model, sha256)
    with RichProgress() as progress:
        result = export_detector(source, out, format=format.lower(), progress=progress)
    emit_json(result.to_dict(), as_json)
    notice(
        f"wrote {result.path} ({result.size_bytes / 2**20:.1f} MiB, {result.backbone} "
        f"{result.architecture}, input {result.input_size} px, dynamic batch)"
    )
    notice(
        f"parity with torch on {result.parity_inputs} random inputs: "
        f"max |Δp| = {result.max_abs_dp:.3g}"
    )
