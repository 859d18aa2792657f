"""What the three training commands share: reading their manifest, showing their results."""

from __future__ import annotations

from pathlib import Path

from dfx.cli.console import print_json, report_manifest_checks, stdout


def read_training_manifest(path: Path, roles: tuple[str, ...], allow_changed: bool):
    """The manifest, its files of ``roles`` checked; rows --allow-changed left out are named."""
    from dfx.data.manifest import read_manifest

    loaded = read_manifest(path, roles=roles, allow_changed=allow_changed)
    report_manifest_checks(loaded)
    return loaded


def render_validated(result, json_output: bool, title: str, wrote: str) -> None:
    """A trained detector's validation metrics and the file written (or its JSON document)."""
    from dfx.cli.tables import summary_table
    from dfx.report import to_json

    if json_output:
        print_json(to_json(result.to_dict()))
        return
    validation = result.validation
    console = stdout()
    console.print(
        summary_table(
            [("validation", validation["multiclass"], validation["binary"])],
            f"{title} (n={validation['n']}, %)",
        )
    )
    console.print(f"wrote {result.path} ({wrote})", markup=False)


def render_base_results(results, json_output: bool) -> None:
    """Print Table 1 and the files written (or the same as JSON)."""
    from dfx.cli.tables import base_metrics_table
    from dfx.report import to_json

    if json_output:
        print_json(to_json({"models": [r.to_dict() for r in results]}))
        return
    console = stdout()
    console.print(base_metrics_table([(r.target, r.test_metrics) for r in results]))
    for r in results:
        console.print(
            f"wrote {r.path} (best epoch {r.best_epoch}, {r.seconds:.1f} s)", markup=False
        )


def render_fusion_result(result, json_output: bool) -> None:
    """Print the validation metrics and timings (or the same as JSON)."""
    render_validated(
        result,
        json_output,
        "Fusion model on its validation features",
        f"best epoch {result.best_epoch}; features extracted once in "
        f"{result.extraction_seconds:.1f} s, head trained in {result.training_seconds:.1f} s",
    )
