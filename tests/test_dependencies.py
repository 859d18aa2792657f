"""Declared dependencies are true: every import of dfx is a core dependency or guarded by
the extra that brings it, and a core install runs every command's help.

A core install (``pip install deepfeaturex``) once failed on ``import click``, which only
the test extra brought. These tests read the imports of the installed package (AST) and
the distribution's own metadata, so they hold the code to what ``pyproject.toml`` says.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata as metadata
import json
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import dfx
from dfx.extras import DISTRIBUTION, EXTRAS
from tests.helpers import COMMANDS

PACKAGE_ROOT = Path(dfx.__file__).parent


def declared() -> tuple[set[str], dict[str, set[str]]]:
    """The core distributions, and each extra's own distributions (not other extras')."""
    core: set[str] = set()
    extras: dict[str, set[str]] = {}
    for line in metadata.requires(DISTRIBUTION) or []:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        if name == DISTRIBUTION:  # the test extra names the others
            continue
        marker = str(requirement.marker or "")
        if "extra" not in marker:
            core.add(name)
            continue
        extra = marker.split("==")[-1].strip().strip("\"'")
        extras.setdefault(extra, set()).add(name)
    return core, extras


@functools.cache
def _distributions_by_module() -> dict[str, list[str]]:
    return metadata.packages_distributions()


def distributions_of(top_level: str) -> set[str]:
    """The distributions that install module ``top_level``.

    An extra's package that is not installed here (OpenVINO is not, in CI) is owned by the
    declared distribution of the same name, so its guarded import is still checked.
    """
    installed = {canonicalize_name(d) for d in _distributions_by_module().get(top_level, [])}
    if installed:
        return installed
    core, extras = declared()
    named = canonicalize_name(top_level)
    return {named} if any(named in members for members in extras.values()) else set()


def third_party_imports() -> list[tuple[Path, ast.AST, str, list[ast.AST]]]:
    """Each import of a module outside the standard library and dfx: file, node, top-level
    name and the chain of enclosing nodes (outermost first)."""
    found = []
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))

        def visit(node, parents, path=path):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top != "dfx" and top not in sys.stdlib_module_names:
                    found.append((path, node, top, parents))
            for child in ast.iter_child_nodes(node):
                visit(child, [*parents, node], path)

        visit(tree, [])
    return found


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    caught = handler.type
    names = caught.elts if isinstance(caught, ast.Tuple) else [caught]
    return any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError")
               for n in names)  # fmt: skip


def _required_extras(scope: ast.AST) -> set[str]:
    """Extras named in ``require("E")`` calls and ``REQUIRES_EXTRA = "E"`` in ``scope``."""
    named = set()
    for node in ast.walk(scope):
        if isinstance(node, ast.Call):
            function = node.func
            called = function.attr if isinstance(function, ast.Attribute) else (
                function.id if isinstance(function, ast.Name) else "")  # fmt: skip
            if called in ("require", "MissingExtra") and node.args:
                if isinstance(node.args[0], ast.Constant):
                    named.add(node.args[0].value)
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            if any(isinstance(t, ast.Name) and t.id == "REQUIRES_EXTRA" for t in node.targets):
                named.add(node.value.value)
    return named


def guard_of(node: ast.AST, parents: list[ast.AST]) -> tuple[str, set[str]]:
    """How an import is guarded: ``try`` (an ImportError is caught around it), or ``extra``
    with the extras its module names (``require("E")``, ``MissingExtra("E")``, or
    ``REQUIRES_EXTRA = "E"``, the only way for an import at the module's top); else ``none``.
    """
    chain = [*parents, node]
    for outer, inner in zip(chain, chain[1:]):
        if isinstance(outer, ast.Try) and inner in outer.body:
            if any(_catches_import_error(h) for h in outer.handlers):
                return "try", set()
    module = parents[0]
    in_function = any(isinstance(p, (ast.FunctionDef, ast.AsyncFunctionDef)) for p in parents)
    if in_function:
        extras = _required_extras(module)
    else:
        extras = _required_extras(ast.Module(body=[
            n for n in module.body if isinstance(n, ast.Assign)
        ], type_ignores=[]))  # fmt: skip
    return ("extra" if extras else "none"), extras


def test_every_third_party_import_is_declared_by_its_distribution_or_guarded_by_its_extra():
    core, extras = declared()
    problems = []
    for path, node, top, parents in third_party_imports():
        where = f"{path.relative_to(PACKAGE_ROOT.parent)}:{node.lineno} ({top})"
        owners = distributions_of(top)
        if not owners:
            problems.append(f"{where}: no installed distribution provides it")
            continue
        if owners & core:
            continue
        kind, named = guard_of(node, parents)
        in_extras = {name for name, members in extras.items() if owners & members}
        if kind == "try":
            if not in_extras:
                problems.append(f"{where}: an optional import that no extra declares")
            continue
        if kind == "none":
            problems.append(
                f"{where}: {sorted(owners)} is neither a core dependency nor guarded by "
                "require(EXTRA) / REQUIRES_EXTRA"
            )
        elif not named & in_extras:
            problems.append(
                f"{where}: guarded by {sorted(named)}, but {sorted(owners)} belongs to "
                f"{sorted(in_extras) or 'no extra'}"
            )
    assert not problems, "\n".join(problems)


def test_every_extra_that_dfx_explains_is_declared_and_brings_its_modules():
    _, extras = declared()
    for name, extra in EXTRAS.items():
        assert name in extras, f"deepfeaturex[{name}] is not declared"
        brought = set().union(*(distributions_of(m) for m in extra.modules))
        assert brought <= extras[name], (name, brought - extras[name])


def test_the_test_extra_does_not_bring_what_the_code_imports_unguarded():
    """click came in only through the test extra; nothing the test extra alone brings may
    be imported by the package."""
    core, extras = declared()
    only_for_tests = (
        extras.get("test", set())
        - core
        - set().union(*(members for name, members in extras.items() if name != "test"))
    )
    imported = set().union(*(distributions_of(top) for _, _, top, _ in third_party_imports()))
    assert not only_for_tests & imported, only_for_tests & imported


BLOCK_NON_CORE = r"""
import importlib.abc, importlib.util, json, sys
blocked = set(json.loads(sys.argv[1]))
found = importlib.util.find_spec
# As on a machine without them: find_spec answers None, and an import fails.
importlib.util.find_spec = lambda name, package=None: (
    None if name.split(".")[0] in blocked else found(name, package)
)

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: not core)")
        return None

sys.meta_path.insert(0, Blocker())
for name in list(sys.modules):
    if name.split(".")[0] in blocked:
        del sys.modules[name]
"""


def non_core_modules() -> list[str]:
    """Top-level modules installed here that no core dependency (nor their own needs) bring."""
    core, _ = declared()
    needed = set(core)
    queue = list(core)
    while queue:  # the core's own dependencies stay importable
        try:
            requirements = metadata.requires(queue.pop()) or []
        except metadata.PackageNotFoundError:
            continue
        for line in requirements:
            requirement = Requirement(line)
            name = canonicalize_name(requirement.name)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            if name not in needed:
                needed.add(name)
                queue.append(name)
    modules = []
    for top, owners in _distributions_by_module().items():
        owners = {canonicalize_name(d) for d in owners}
        if not owners & needed and top not in sys.stdlib_module_names and top.isidentifier():
            modules.append(top)
    return sorted(set(modules) - {"dfx", "_pytest", "pytest", "tests"})


def run_without_extras(code: str, *, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter where only the core install can be imported."""
    blocked = non_core_modules()
    return subprocess.run(
        [sys.executable, "-c", BLOCK_NON_CORE + code, json.dumps(blocked)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_blocker_really_hides_the_extras():
    blocked = non_core_modules()
    assert {"fastapi", "captum", "onnxruntime"} & set(blocked)
    result = run_without_extras("import fastapi")
    assert result.returncode != 0 and "blocked: not core" in result.stderr


def test_every_command_shows_its_help_on_a_core_install():
    """What ``.ci/run`` checks in a venv with no extras, here by hiding them."""
    code = f"""
import contextlib, io
from dfx.cli import app
codes = {{}}
for command in {[*COMMANDS, None]!r}:
    args = [command, "--help"] if command else ["--help"]
    with contextlib.redirect_stdout(io.StringIO()) as page:
        try:
            app(args, prog_name="dfx")
        except SystemExit as done:
            codes[command or "dfx"] = (done.code, "Usage" in page.getvalue())
print(json.dumps(codes))
"""
    result = run_without_extras("import json\n" + code)
    assert result.returncode == 0, result.stderr
    codes = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(codes) == {*COMMANDS, "dfx"}
    assert all(code == [0, True] for code in codes.values()), codes


def test_every_module_imports_on_a_core_install_unless_it_declares_its_extra():
    modules = sorted(
        path.relative_to(PACKAGE_ROOT.parent).with_suffix("").as_posix().replace("/", ".")
        for path in PACKAGE_ROOT.rglob("*.py")
        if "REQUIRES_EXTRA =" not in path.read_text(encoding="utf-8")
    )
    modules = [m.removesuffix(".__init__") for m in modules]
    assert "dfx.cli" in modules and "dfx.serve.app" not in modules
    code = f"""
import importlib, traceback
failed = []
for module in {modules!r}:
    try:
        importlib.import_module(module)
    except Exception as error:
        failed.append(f"{{module}}: {{type(error).__name__}}: {{error}}")
print(json.dumps(failed))
"""
    result = run_without_extras("import json\n" + code)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
