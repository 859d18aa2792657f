"""dfx backbones: list the selectable backbones (a static table: no torch import)."""

from __future__ import annotations

from dfx.cli.console import stdout
from dfx.cli.errors import handle_errors
from dfx.cli.options import JsonOutput
from dfx.cli.outputs import check_outputs, emit_json


@handle_errors
def backbones_command(json_path: JsonOutput = None) -> None:
    """List the backbones with their feature size, default input and explained layer."""
    from rich.table import Table

    from dfx.models.registry import REGISTRY

    check_outputs({"--json": json_path})
    rows = [spec.to_dict() for spec in REGISTRY.values()]
    if emit_json(rows, json_path):
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
