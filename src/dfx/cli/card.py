"""dfx card: write a Hugging Face model card (README.md) for a detector file."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from dfx.cli.console import report_written
from dfx.cli.errors import handle_errors
from dfx.cli.model_reference import fetch_model
from dfx.cli.options import ModelOption, Sha256Option, artifact_option
from dfx.cli.outputs import check_outputs

EPILOG = """\
[bold]Examples[/bold]

  dfx card --model model.pt --repo lab/dfx-densenet --out README.md
  dfx evaluate --model model.pt -m manifest.csv -o eval.json
  dfx robustness --model model.pt -m manifest.csv -o robust.json
  dfx card --model model.pt --repo lab/dfx-densenet --results eval.json --results robust.json
  dfx card --model hf://lab/dfx-densenet@v1/model.pt            # card of a published file

The card starts with YAML metadata (license, tags, library_name dfx, pipeline_tag
image-classification, the metrics and a model-index), then describes the model,
its training data and configuration as recorded in the file, the results, intended
use and limitations, and how to run it with 'dfx predict --model hf://...' and the
file's SHA-256. Without --out the card goes to stdout. docs/publishing.md shows the
whole publishing procedure.
"""


@handle_errors
def card_command(
    model: ModelOption,
    sha256: Sha256Option = None,
    out: Annotated[
        Path | None, artifact_option(help="Write the card to FILE (default: stdout).")
    ] = None,
    repo: Annotated[
        str | None,
        typer.Option(
            "--repo",
            metavar="ORG/REPO[@REVISION]",
            help="The Hub repository the file is published in, for the usage example "
            "(default: the one of an hf:// --model, else ORG/REPO).",
        ),
    ] = None,
    results: Annotated[
        list[Path] | None,
        typer.Option(
            "--results",
            help="JSON written by 'dfx evaluate --json' or 'dfx robustness --json' (repeatable).",
        ),
    ] = None,
    license: Annotated[
        str, typer.Option("--license", help="Hub licence identifier of the weights.")
    ] = "mit",
) -> None:
    """Write a Hugging Face model card for a detector file."""
    from dfx.checkpoint import DETECTOR_FORMAT, load_model_file
    from dfx.errors import DfxError
    from dfx.fingerprint import file_sha256
    from dfx.model_card import CardInputs, build_card
    from dfx.model_source import parse_reference
    from dfx.report import write_text

    check_outputs({"--output": out})
    documents = [(path.stem, _read_results(path)) for path in results or []]
    reference = parse_reference(model, sha256)
    if repo is not None and repo.count("/") != 1:
        raise DfxError(f"--repo must be ORG/REPO or ORG/REPO@REVISION, got '{repo}'.")
    path = Path(fetch_model(model, sha256))
    model_file = load_model_file(path, DETECTOR_FORMAT)
    file_name = reference.filename or path.name
    if repo is not None:
        hub = f"hf://{repo}/{file_name}"
    elif reference.kind == "hub":
        hub = reference.text
    else:
        hub = f"hf://ORG/REPO/{file_name}"
    inputs = CardInputs(
        file_name=file_name,
        sha256=file_sha256(path),
        reference=hub,
        license=license,
        results=documents,
    )
    text = build_card(model_file, inputs)
    if out is None:
        sys.stdout.write(text)
        return
    write_text(text, out)
    report_written([out])  # on stderr, hidden by --quiet


def _read_results(path: Path) -> dict:
    from dfx.errors import DfxError

    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DfxError(f"results file {path} does not exist.") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DfxError(f"results file {path} is not JSON ({error}).") from None
    if not isinstance(document, dict) or not ({"multiclass", "sets", "rows"} & set(document)):
        raise DfxError(
            f"{path} is not a result of 'dfx evaluate --json' or 'dfx robustness --json'."
        )
    return document
