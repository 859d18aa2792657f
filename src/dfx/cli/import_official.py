"""dfx import-official: turn the official DeepFeatureX release's weights into dfx model files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dfx.cli.console import notice
from dfx.cli.errors import handle_errors
from dfx.cli.options import ImageSize, JsonFlag, artifact_option
from dfx.cli.outputs import check_outputs, emit_json

EPILOG = """\
[bold]Examples[/bold]

  dfx import-official -b densenet121 --complete complete.pt --out model.pt
  dfx import-official -b densenet121 --complete complete.pt --dm dm.pt --out model.pt
  dfx import-official -b resnet50 --dm dm.pt --gan gan.pt --real real.pt --out base/
  dfx import-official -b vit_b_16 --complete complete.pt --out vit.pt --json

--complete gives a detector file. Base-model files beside it replace its extractors;
without it, the three base-model files become dm.pt, gan.pt and real.pt in the --out
folder (the fusion head's weights exist only in the complete-model file). Files load with
weights_only=True; a {'state_dict': ...} wrapper and DataParallel 'module.' prefixes are
undone. Preprocessing comes from the backbone: 256×256, ViT 256 then centre crop 224.
"""


@handle_errors
def import_official_command(
    backbone: Annotated[
        str, typer.Option("--backbone", "-b", help="Backbone the official files were trained with.")
    ],
    out: Annotated[
        Path,
        artifact_option(
            help="Detector file to write (a folder without --complete).", metavar="PATH"
        ),
    ],
    complete: Annotated[
        Path | None,
        typer.Option("--complete", help="Official complete-model state dict (model1/2/3, convs)."),
    ] = None,
    dm: Annotated[Path | None, typer.Option("--dm", help="Official dm base-model file.")] = None,
    gan: Annotated[Path | None, typer.Option("--gan", help="Official gan base-model file.")] = None,
    real: Annotated[
        Path | None, typer.Option("--real", help="Official real base-model file.")
    ] = None,
    image_size: ImageSize = None,
    as_json: JsonFlag = False,
) -> None:
    """Convert the official release's state dicts into a dfx detector (or base-model) file."""
    if complete is not None:
        check_outputs({"--output": out})
    else:
        check_outputs(folders={"--output": out})
    from dfx.checkpoint import DETECTOR_FORMAT
    from dfx.interop.official import import_official

    result = import_official(
        backbone, out, complete=complete, dm=dm, gan=gan, real=real, image_size=image_size
    )
    # What was read and written are notices; the JSON document is the result.
    for source in result.sources:
        notice(f"read {source.role}: {source.path} (sha256 {source.sha256[:12]}…)")
    what = "detector" if result.format == DETECTOR_FORMAT else "base model"
    for path in result.written:
        notice(f"wrote {what} {path} ({result.backbone})")
    emit_json(
        {
            "format": result.format,
            "backbone": result.backbone,
            "written": [str(path) for path in result.written],
            "tensors": result.tensors,
            "sources": [
                {"role": s.role, "path": s.path, "sha256": s.sha256} for s in result.sources
            ],
        },
        as_json,
    )
