"""dfx backbones: list the selectable backbones."""

from __future__ import annotations

from typing import Annotated

import typer

from dfx.cli.console import print_json, stdout
from dfx.cli.errors import handle_errors


@handle_errors
def backbones_command(
    json_output: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """List the backbones with their feature size, default input and explained layer."""
    from rich.table import Table

    from dfx.models.backbones import REGISTRY
    from dfx.report import to_json

    rows = [
        {
            "name": s.name,
            "feature_dim": s.feature_dim,
            "resize": s.preprocessing().resize,
            "crop": s.preprocessing().crop,
            "imagenet_weights": s.torchvision_name is not None,
            "attribution_layer": s.attribution_layer,
        }
        for s in REGISTRY.values()
    ]
    if json_output:
        print_json(to_json(rows))
        return
    table = Table("backbone", "features", "input", "ImageNet weights", "explained layer")
    for row in rows:
        size = f"{row['resize']}" + (f" → crop {row['crop']}" if row["crop"] else "")
        table.add_row(
            row["name"],
            str(row["feature_dim"]),
            size,
            "yes" if row["imagenet_weights"] else "no",
            row["attribution_layer"],
        )
    stdout().print(table)
