"""The package as installed: its version, entry points and files (.ci/run runs it on the wheel)."""

from __future__ import annotations

import ast
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


TESTS = Path(__file__).resolve().parent


def pythonpath_settings(source: str) -> list[int]:
    """Lines of ``source`` that name PYTHONPATH other than to remove, read or compare it."""
    tree = ast.parse(source)
    allowed = {
        id(call.args[0])
        for call in ast.walk(tree)
        if isinstance(call, ast.Call) and call.args
        and isinstance(call.func, ast.Attribute) and call.func.attr in ("pop", "get")
    } | {
        id(operand)
        for compare in ast.walk(tree)
        if isinstance(compare, ast.Compare)
        for operand in (compare.left, *compare.comparators)
    }  # fmt: skip
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value == "PYTHONPATH" and id(node) not in allowed
    ] + [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.keyword) and node.arg == "PYTHONPATH"
    ]


def test_no_test_puts_src_on_pythonpath():
    """Child processes run the installed dfx (the wheel in CI, the editable install in
    development): a test that set PYTHONPATH would test src/ instead, and could not see a
    file or a dependency the wheel lacks."""
    found = [
        f"{path.relative_to(TESTS.parent)}:{line}"
        for path in sorted(TESTS.rglob("*.py"))
        for line in pythonpath_settings(path.read_text(encoding="utf-8"))
    ]
    assert found == [], "PYTHONPATH set in " + ", ".join(found)
    assert pythonpath_settings('env = os.environ | {"PYTHONPATH": str(SRC)}') == [1]
    assert pythonpath_settings('monkeypatch.setenv("PYTHONPATH", "src")') == [1]
    assert pythonpath_settings('env["PYTHONPATH"] = "src"\ndict(PYTHONPATH="src")') == [1, 2]
    assert pythonpath_settings('child.pop("PYTHONPATH", None)\nname == "PYTHONPATH"') == []


SKIPPING = """
import pytest
from tests.helpers import SKIP_AS_ROOT, SKIP_WITHOUT_OPENVINO

def test_declared():
    pytest.skip(SKIP_AS_ROOT)

@pytest.mark.skipif(True, reason=SKIP_WITHOUT_OPENVINO)
def test_declared_by_mark():
    pass

def test_undeclared():
    pytest.skip("chromium is not installed")

def test_runs():
    pass
"""


@pytest.mark.parametrize("required", ["1", ""])
def test_only_the_declared_skips_pass_when_the_installed_package_is_required(tmp_path, required):
    """Under DFX_REQUIRE_INSTALLED=1 (CI), tests/conftest.py fails a skip that is not one of
    DECLARED_SKIPS; elsewhere a skip stays a skip."""
    (tmp_path / "test_skipping.py").write_text(SKIPPING)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), str(tmp_path / "test_skipping.py")],
        cwd=TESTS.parent, env=os.environ | {"DFX_REQUIRE_INSTALLED": required},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    summary = done.stdout.strip().splitlines()[-1]
    if required:
        assert done.returncode == 1, done.stdout
        assert "1 failed, 1 passed, 2 skipped" in summary, done.stdout
        assert "FAILED" in done.stdout and "test_undeclared" in done.stdout
        assert "chromium is not installed" in done.stdout
    else:
        assert done.returncode == 0, done.stdout
        assert "1 passed, 3 skipped" in summary, done.stdout
