"""dfx backbones: list the selectable backbones (a static table: no torch import)."""

from __future__ import annotations

from dfx.cli.console import stdout
from dfx.cli.errors import handle_errors
from dfx.cli.options import JsonFlag
from dfx.cli.outputs import emit_json


@handle_errors
def backbones_command(as_json: JsonFlag = False) -> None:
    """List the backbones with their feature size, default input and explained layer."""
    from rich.table import Table

    from dfx.models.registry import REGISTRY

    rows = [spec.to_dict() for spec in REGISTRY.values()]
    if emit_json(rows, as_json):
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
