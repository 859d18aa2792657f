"""dfx explain: where each specialist base model finds its evidence, and how much each drove it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dfx.cli.console import RichProgress, print_json, print_rows, report_warnings
from dfx.cli.errors import EXIT_INPUT_FAILED, handle_errors
from dfx.cli.inputs import gather_inputs
from dfx.cli.model_reference import check_model, fetch_model
from dfx.cli.options import (
    Device,
    JsonFlag,
    MaxPixels,
    ModelOption,
    Precision,
    Sha256Option,
    ThresholdOption,
    Workers,
    artifact_option,
)
from dfx.cli.outputs import check_outputs
from dfx.limits import DEFAULT_MAX_PIXELS
from dfx.models.inference_settings import explain_batch_size_help

EPILOG = """\
[bold]Examples[/bold]

  dfx explain --model model.pt photo.jpg                 # writes ./dfx-explain/photo.*.png
  dfx explain --model model.pt suspects/ --out report/ --target gan
  dfx explain --model model.pt collage.png --method gradcam-relative   # where, never blank
  find . -name '*.png' | dfx explain - --json > explanations.jsonl

For each image: a heatmap per specialist base model (dm, gan, real) of the evidence for the
target class (default: the predicted one), written as overlays <name>.<specialist>.png and a
contact sheet <name>.sheet.png; and each specialist's share of the target class's score.
With --json, one object per input line: path, label, probs, p_fake, fake, target, method,
shares {dm, gan, real}, size and files. An unreadable input gives {path, error} and the
others still run; the exit code is then 1. A heatmap shows where a model looked, not proof
of manipulation (docs/explain.md).
"""


@handle_errors
def explain_command(
    paths: Annotated[
        list[str],
        typer.Argument(
            metavar="PATH", help="Image files, folders (recursive), or - for stdin paths."
        ),
    ],
    model: ModelOption,
    sha256: Sha256Option = None,
    out: Annotated[
        Path, artifact_option(help="Folder for the overlays and contact sheets.", metavar="DIR")
    ] = Path("dfx-explain"),
    target: Annotated[
        str,
        typer.Option("--target", help="Class to explain: predicted, dm, gan or real."),
    ] = "predicted",
    method: Annotated[
        str,
        typer.Option(
            "--method",
            help="Heatmap method: gradcam; gradcam-relative (evidence above the image's "
            "average, for where); gradcam++, layercam or hirescam.",
        ),
    ] = "gradcam",
    as_json: JsonFlag = False,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size", min=1, help=f"Images per step (default: {explain_batch_size_help()})."
        ),
    ] = None,
    threshold: ThresholdOption = None,
    device: Device = "auto",
    precision: Precision = "auto",
    workers: Workers = None,
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
) -> None:
    """Show where each specialist found its evidence, and how much each drove the verdict."""
    check_outputs(folders={"--output": out})
    check_model(model, sha256)
    inputs, problems = gather_inputs(paths, "explain")  # nothing to explain: exit 2, no torch

    from dfx.api import load_detector
    from dfx.cli.tables import explanations_table, explanations_tsv
    from dfx.extras import require
    from dfx.report import to_json

    require("explain")  # before the model loads
    # Attribution needs gradients, which only torch gives.
    detector = load_detector(fetch_model(model, sha256), device, precision, runtime="torch")
    batches = detector.iter_explain(  # the threshold and the batch size, resolved once
        inputs,
        target=target,
        method=method,
        batch_size=batch_size,
        workers=workers,
        threshold=threshold,
        max_pixels=max_pixels,
    )
    chosen = batches.threshold.value
    records, stems, warned = [], set(), []
    failed = bool(problems)
    with RichProgress(enabled=len(inputs) > batches.batch_size) as progress:
        batches.progress = progress
        for batch in batches:
            for explanation in batch:
                record = _write(explanation, out, stems, chosen, max_pixels)
                failed = failed or record.get("error") is not None
                if record.get("warning"):
                    warned.append(f"{record['path']}: {record['warning']}")
                _emit(record, as_json, records, to_json)
    for path, reason in problems:
        _emit({"path": str(path), "error": reason}, as_json, records, to_json)
    if not as_json:
        print_rows(lambda: explanations_table(records), lambda: explanations_tsv(records))
    report_warnings(warned)
    if failed:
        raise typer.Exit(EXIT_INPUT_FAILED)


def _write(explanation, out: Path, stems: set, threshold: float, max_pixels) -> dict:
    """Write the overlays and sheet of one explained input; its JSON record with ``files``."""
    from dfx.data.decoding import load_rgb
    from dfx.errors import ImageReadError
    from dfx.overlays import write_explanation

    record = explanation.to_dict()
    if explanation.error is not None:
        return record
    try:  # the image as displayed, to paint on; it was read a moment ago
        image = load_rgb(explanation.path, max_pixels)
    except ImageReadError as error:
        return {"path": explanation.path, "error": str(error)}
    stem = _unique_stem(Path(explanation.path).stem, stems)
    files = write_explanation(explanation, image, out, stem, threshold)
    return {**record, "files": [str(f) for f in files]}


def _unique_stem(stem: str, used: set) -> str:
    """``stem``, or ``stem-2``, ``stem-3``... when files of another input already use it."""
    candidate, number = stem, 1
    while candidate in used:
        number += 1
        candidate = f"{stem}-{number}"
    used.add(candidate)
    return candidate


def _emit(record: dict, as_json: bool, records: list, to_json) -> None:
    if as_json:  # JSON lines stream out as each input is done, for pipelines
        print_json(to_json(record, indent=None))
    else:
        records.append(record)
