"""The package as installed: its version, entry points and files (.ci/run runs it on the wheel)."""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import dfx
from tests.helpers import invoke

DISTRIBUTION = "deepfeaturex"
SOURCE = Path(__file__).resolve().parents[1] / "src" / "dfx"
REQUIRE_INSTALLED = os.environ.get("DFX_REQUIRE_INSTALLED") == "1"
"""Set by .ci/run: there, dfx must come from the installed wheel, and nothing is skipped."""


def installed_distribution() -> importlib.metadata.Distribution:
    """The deepfeaturex distribution that ``import dfx`` found, or a skip (a failure in CI)."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
        located = Path(dist.locate_file("dfx/__init__.py")).resolve()
    except importlib.metadata.PackageNotFoundError:
        located = None
    if located == Path(dfx.__file__).resolve():
        return dist
    reason = f"dfx was imported from {dfx.__file__}, not from an installed {DISTRIBUTION}"
    if REQUIRE_INSTALLED:
        pytest.fail(reason)
    pytest.skip(reason)


def test_version_option_prints_the_package_version():
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout == f"dfx {dfx.__version__}\n"


def test_package_data_is_present():
    package = importlib.resources.files("dfx")
    assert package.joinpath("py.typed").is_file()
    for asset in ("index.html", "app.js", "style.css"):  # the page of dfx serve
        assert package.joinpath("serve", "static", asset).is_file(), asset


def test_installed_version_matches_the_metadata():
    dist = installed_distribution()
    assert dfx.__version__ == dist.version
    commands = [[sys.executable, "-m", "dfx", "--version"]]
    script = shutil.which("dfx", path=str(Path(sys.executable).parent))
    if script or REQUIRE_INSTALLED:
        commands.append([script or "dfx", "--version"])
    for command in commands:
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
        assert result.stdout.strip() == f"dfx {dist.version}", command


def test_the_wheel_holds_every_source_file():
    dist = installed_distribution()
    if not SOURCE.is_dir():
        pytest.skip(f"no source tree at {SOURCE} to compare with")
    shipped = {str(path).replace("\\", "/") for path in dist.files or []}
    wanted = {
        "dfx/" + path.relative_to(SOURCE).as_posix()
        for path in SOURCE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }
    assert "dfx/py.typed" in wanted
    assert sorted(wanted - shipped) == []
