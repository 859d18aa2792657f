"""dfx predict: classify image files, folders, or paths read from stdin."""

from __future__ import annotations

import itertools
from collections import Counter
from contextlib import ExitStack
from typing import Annotated

import typer

from dfx.cli.console import (
    RichProgress,
    notice,
    print_rows,
    print_text,
    report_warnings,
    report_written,
)
from dfx.cli.errors import EXIT_INPUT_FAILED, handle_errors
from dfx.cli.inputs import gather_inputs
from dfx.cli.model_reference import check_model, fetch_model
from dfx.cli.options import (
    BackendOption,
    Compile,
    Device,
    InferenceBatchSize,
    JsonFlag,
    MaxPixels,
    ModelOption,
    OutputFiles,
    Precision,
    Sha256Option,
    ThresholdOption,
    Workers,
)
from dfx.cli.outputs import check_outputs, plan_outputs
from dfx.extras import install_command
from dfx.limits import DEFAULT_MAX_PIXELS

EPILOG = """\
[bold]Examples[/bold]

  dfx predict -M model.pt photo.jpg
  dfx predict -M hf://ORG/REPO@v1/model.pt photo.jpg   # downloaded once, then cached
  export DFX_MODEL=model.pt; dfx predict downloads/          # folders are searched
  find . -name '*.png' | dfx predict - --json > verdicts.jsonl
  dfx predict suspicious.webp --json | jq -r 'select(.p_fake > 0.5) | .path'
  dfx predict inbox/ > verdicts.tsv                           # tab-separated in a file
  dfx predict --json photos/ -o verdicts.jsonl               # a file, and the table too
  dfx predict -M model.onnx photos/                         # 'dfx export' file: ONNX Runtime
  dfx predict -M model.pt --runtime openvino --precision bf16 photos/

With --json, one object per input line: path, label, probs {dm, gan, real}, p_fake
(= p_dm + p_gan), fake (p_fake >= the model's calibrated threshold, or --threshold)
and error (null). An unreadable input gives {path, error} and the
others still run; the exit code is then 1. -o FILE writes the same lines to FILE
(.jsonl/.json; .tsv for tab-separated lines) and still prints the verdicts. Without
--json: a table on a terminal, tab-separated lines (with a header) in a pipe or file;
a summary with the threshold goes to stderr.
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
    sha256: Sha256Option = None,
    as_json: JsonFlag = False,
    outputs: OutputFiles = None,
    batch_size: InferenceBatchSize = None,
    threshold: ThresholdOption = None,
    device: Device = "auto",
    precision: Precision = "auto",
    compile: Compile = False,
    backend: BackendOption = "auto",
    workers: Workers = None,
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
) -> None:
    """Say whether images are real, GAN-generated or diffusion-generated."""
    plan = plan_outputs(outputs, as_json=as_json, formats=("json", "tsv"))
    check_outputs(plan.file_options())
    check_model(model, sha256)  # before torch loads: a wrong path fails at once
    inputs, problems = gather_inputs(paths, "predict")  # nothing to predict: exit 2 now

    from dfx.api import Prediction, load_detector
    from dfx.atomic import atomic_write
    from dfx.cli.tables import predictions_tsv
    from dfx.report import to_json, write_text

    detector = load_detector(
        fetch_model(model, sha256), device, precision, compile, runtime=backend
    )
    batches = detector.iter_predict(  # the threshold and the batch size, resolved once
        inputs, batch_size=batch_size, workers=workers, threshold=threshold, max_pixels=max_pixels
    )
    decision = batches.threshold
    to_stdout = plan.stdout == "json"
    json_files = [path for path, form in plan.files if form == "json"]
    keep_rows = not to_stdout or len(json_files) < len(plan.files)
    table_rows = []  # JSON lines are not kept: a stream of millions stays small
    counts = Counter()
    unchecked_c2pa = 0
    warned = []
    with RichProgress(enabled=len(inputs) > batches.batch_size) as progress, ExitStack() as files:
        handles = [files.enter_context(atomic_write(path)) for path in json_files]
        batches.progress = progress
        unusable = [Prediction.failed(path, reason) for path, reason in problems]
        for batch in itertools.chain(batches, [unusable]):
            counts.update(_verdict(p) for p in batch)
            unchecked_c2pa += sum(_unchecked_c2pa(p) for p in batch)
            for prediction in batch:
                record = prediction.to_dict()
                if prediction.warning:
                    warned.append(f"{prediction.path}: {prediction.warning}")
                line = to_json(record, indent=None)
                if to_stdout:  # JSON lines stream out batch by batch, for pipelines
                    print_text(line)
                for handle in handles:
                    handle.write(line + "\n")
                if keep_rows:
                    table_rows.append(record)
    for path, form in plan.files:
        if form == "tsv":
            write_text(predictions_tsv(table_rows) + "\n", path)
    if not to_stdout:
        render_predictions(table_rows)
    report_written([path for path, _ in plan.files])
    notice(
        f"{sum(counts.values())} input(s): {counts['fake']} fake, {counts['real']} real, "
        f"{counts['failed']} failed; fake means P(fake) >= {decision.value:.4g} "
        f"({decision.label})."
    )
    report_warnings(warned)
    if unchecked_c2pa:
        notice(
            f"{unchecked_c2pa} file(s) carry a C2PA manifest whose signature was not checked; "
            f"to verify it: {install_command('c2pa')}."
        )
    if counts["failed"]:
        raise typer.Exit(EXIT_INPUT_FAILED)


def _unchecked_c2pa(prediction) -> bool:
    claims = prediction.provenance.claims if prediction.provenance else []
    from dfx.data.provenance import UNCHECKED_C2PA

    return any(c.source == "c2pa" and c.value == UNCHECKED_C2PA for c in claims)


def _verdict(prediction) -> str:
    if prediction.error is not None:
        return "failed"
    return "fake" if prediction.fake else "real"


def render_predictions(records: list[dict]) -> None:
    """A table on a terminal; tab-separated lines, one per input, in a pipe or a file."""
    from dfx.cli.tables import predictions_table, predictions_tsv

    print_rows(lambda: predictions_table(records), lambda: predictions_tsv(records))
