"""Helpers the CLI tests share: Typer's runner, a tiny training run's options, the commands."""

from __future__ import annotations

import shutil
from pathlib import Path

from typer.testing import CliRunner

from dfx.cli import app
from dfx.data.manifest import make_manifest, write_manifest

runner = CliRunner()

TINY_RUN = [
    "--backbone",
    "tiny",
    "--weights",
    "none",
    "--image-size",
    "32",
    "--epochs",
    "1",
    "--device",
    "cpu",
    "--workers",
    "0",
]
"""Options of a one-epoch tiny training run on the 32-pixel synthetic set."""

COMMANDS = [
    "demo",
    "split",
    "train-base",
    "train-fusion",
    "train-baseline",
    "evaluate",
    "jpeg-robustness",
    "robustness",
    "predict",
    "explain",
    "export",
    "import-official",
    "card",
    "serve",
    "backbones",
]


def invoke(*args: str, input: str | None = None, env: dict | None = None):
    return runner.invoke(app, [str(a) for a in args], input=input, env=env)


def evaluate_test_split(trained: dict, *options):
    """``dfx evaluate`` of the trained detector on its manifest's test split."""
    return invoke("evaluate", "--model", trained["model"], "-m", trained["manifest"], *options)


def assert_user_error(result, *fragments: str) -> None:
    """Exit code 2, one sentence on stderr, no traceback."""
    assert result.exit_code == 2, result.output
    # Progress lines (stderr is no terminal here) may come first; the error ends it.
    message = result.stderr[result.stderr.find("error:") :].strip()
    assert "error:" in result.stderr and message.count("error:") == 1
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in " ".join(message.split())


def private_copy(manifest: Path, tmp_path: Path) -> Path:
    """A copy of the data folder and its manifest under ``tmp_path``; returns the manifest."""
    data = shutil.copytree(manifest.parent / "data", tmp_path / "data")
    return write_manifest(make_manifest(data), tmp_path / "manifest.csv")
