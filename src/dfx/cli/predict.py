"""dfx predict: classify image files, folders, or paths read from stdin."""

from __future__ import annotations

import itertools
import sys
from typing import Annotated

import typer

from dfx.cli.console import RichProgress, print_json, stdout
from dfx.cli.errors import EXIT_INPUT_FAILED, handle_errors
from dfx.cli.options import (
    Compile,
    Device,
    InferenceBatchSize,
    InferenceRuntime,
    MaxPixels,
    ModelOption,
    Precision,
    ThresholdOption,
    Workers,
)
from dfx.limits import DEFAULT_MAX_PIXELS

EPILOG = """\
[bold]Examples[/bold]

  dfx predict --model model.pt photo.jpg
  export DFX_MODEL=model.pt; dfx predict downloads/          # folders are searched
  find . -name '*.png' | dfx predict - --json > verdicts.jsonl
  dfx predict suspicious.webp --json | jq -r 'select(.p_fake > 0.5) | .path'
  dfx predict --model model.onnx photos/                    # 'dfx export' file: ONNX Runtime
  dfx predict --model model.pt --runtime openvino --precision bf16 photos/

With --json, one object per input line: path, label, probs {dm, gan, real}, p_fake
(= p_dm + p_gan), fake (p_fake >= the model's calibrated threshold, or --threshold)
and error (null). An unreadable input gives {path, error} and the
others still run; the exit code is then 1.
"""


@handle_errors
def predict_command(
    paths: Annotated[
        list[str],
        typer.Argument(
            metavar="PATH", help="Image files, folders (recursive), or - for stdin paths."
        ),
    ],
    model: ModelOption,
    json_output: Annotated[
        bool, typer.Option("--json", help="One JSON object per input line on stdout.")
    ] = False,
    batch_size: InferenceBatchSize = None,
    threshold: ThresholdOption = None,
    device: Device = "auto",
    precision: Precision = "auto",
    compile: Compile = False,
    runtime: InferenceRuntime = "auto",
    workers: Workers = None,
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
) -> None:
    """Say whether images are real, GAN-generated or diffusion-generated."""
    from dfx.api import Prediction, load_detector
    from dfx.cli.tables import predictions_table
    from dfx.data.images import expand_inputs
    from dfx.report import to_json

    detector = load_detector(model, device, precision, compile, runtime)
    arguments = _read_stdin_paths(paths)
    inputs, problems = expand_inputs(arguments)
    batch_size = detector.batch_size(batch_size)
    table_rows = []  # JSON lines are not kept: a stream of millions stays small
    failed = bool(problems)
    with RichProgress(enabled=len(inputs) > batch_size) as progress:
        batches = detector.iter_predict(
            inputs,
            batch_size=batch_size,
            workers=workers,
            progress=progress,
            threshold=threshold,
            max_pixels=max_pixels,
        )
        unusable = [Prediction(str(path), None, None, None, reason) for path, reason in problems]
        for batch in itertools.chain(batches, [unusable]):
            failed = failed or any(p.error for p in batch)
            if json_output:  # JSON lines stream out batch by batch, for pipelines
                for prediction in batch:
                    print_json(to_json(prediction.to_dict(), indent=None))
            else:
                table_rows += [prediction.to_dict() for prediction in batch]
    if not json_output:
        stdout().print(predictions_table(table_rows))
    if failed:
        raise typer.Exit(EXIT_INPUT_FAILED)


def _read_stdin_paths(paths: list[str]) -> list[str]:
    expanded = []
    for argument in paths:
        if argument == "-":
            expanded.extend(line.strip() for line in sys.stdin if line.strip())
        else:
            expanded.append(argument)
    return expanded
