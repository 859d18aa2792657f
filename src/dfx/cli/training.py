"""What the three training commands share: their config and manifest, showing their results."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from dfx.cli.console import notice, report_failures, report_manifest_checks, stdout
from dfx.cli.errors import exit_if_failures
from dfx.cli.options import config_from
from dfx.cli.outputs import emit_json


def training_setup(config_type, options: dict, manifest: Path, roles: tuple[str, ...]):
    """The run's config from the command's options (its backbone checked first, where it
    has one) and the manifest with its files of ``roles`` checked."""
    config = config_from(config_type, options)
    if hasattr(config, "backbone"):
        from dfx.models.backbones import get_spec

        get_spec(config.backbone)
    return config, read_training_manifest(manifest, roles, options["allow_changed"])


def finish_training(failures: list, render: Callable[[], None]) -> None:
    """Name the unreadable images, show the results, and exit 1 when images were skipped."""
    report_failures(failures)
    render()
    exit_if_failures(failures)


def read_training_manifest(path: Path, roles: tuple[str, ...], allow_changed: bool):
    """The manifest, its files of ``roles`` checked; rows --allow-changed left out are named."""
    from dfx.data.manifest import read_manifest

    loaded = read_manifest(path, roles=roles, allow_changed=allow_changed)
    report_manifest_checks(loaded)
    return loaded


def render_validated(result, as_json: bool, title: str, wrote: str) -> None:
    """A trained detector's validation metrics (or its JSON document); the file written."""
    from dfx.cli.tables import summary_table

    notice(f"wrote {result.path} ({wrote})")
    if emit_json(result.to_dict(), as_json):
        return
    validation = result.validation
    stdout().print(
        summary_table(
            [("validation", validation["multiclass"], validation["binary"])],
            f"{title} (n={validation['n']}, %)",
        )
    )


def render_base_results(results, as_json: bool) -> None:
    """Print Table 1 (or the same as JSON); the files written go to stderr."""
    from dfx.cli.tables import base_metrics_table

    for r in results:
        notice(f"wrote {r.path} (best epoch {r.best_epoch}, {r.seconds:.1f} s)")
    if emit_json({"models": [r.to_dict() for r in results]}, as_json):
        return
    stdout().print(base_metrics_table([(r.target, r.test_metrics) for r in results]))


def render_fusion_result(result, as_json: bool) -> None:
    """Print the validation metrics and timings (or the same as JSON)."""
    render_validated(
        result,
        as_json,
        "Fusion model on its validation features",
        f"best epoch {result.best_epoch}; features extracted once in "
        f"{result.extraction_seconds:.1f} s, head trained in {result.training_seconds:.1f} s",
    )
