"""The import structure of docs/architecture.md is the code's: its arrows, and no circle."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import dfx

PACKAGE = Path(dfx.__file__).resolve().parent
ARCHITECTURE = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
SUBPACKAGES = {"cli", "serve", "engine", "interop", "models", "data"}
FILES = {"checkpoint", "model_card"}
"""The modules the diagram calls ``files``: the model file and its card."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(part for part in parts if part != "__init__")


def imported_modules(path: Path) -> set[str]:
    """Every dfx module that ``path`` imports, wherever the import stands."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "dfx":
                found |= {f"dfx.{alias.name}" for alias in node.names}
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name == "dfx" or name.startswith("dfx.")}


def part_of(module: str) -> str:
    """The diagram's name for the part a module belongs to."""
    parts = module.split(".")
    if len(parts) == 1:
        return "dfx"
    if parts[1] in SUBPACKAGES or parts[1] in ("api", "__main__"):
        return parts[1]
    return "files" if parts[1] in FILES else "leaf"


def module_graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        # "from dfx.data import record" names a module; "from dfx.data.record import X" too.
        targets = set()
        for imported in imported_modules(path):
            while imported not in modules and "." in imported:
                imported = imported.rsplit(".", 1)[0]
            if imported in modules and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def documented_arrows() -> dict[str, set[str]]:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    block = re.search(r"<!-- imports:.*?-->\s*```\n(.*?)```", text, re.S)
    assert block, "docs/architecture.md lost its imports block"
    arrows = {}
    for line in block.group(1).strip().splitlines():
        source, targets = (side.strip() for side in line.split("→"))
        arrows[source] = {target.strip() for target in targets.split(",")}
    return arrows


def test_the_code_imports_exactly_what_the_architecture_diagram_draws():
    drawn = documented_arrows()
    found: dict[str, set[str]] = defaultdict(set)
    for module, targets in module_graph().items():
        for target in targets:
            if part_of(target) != part_of(module):
                found[part_of(module)].add(part_of(target))
    found.pop("leaf", None)  # the leaf modules import only each other: checked below
    assert dict(found) == drawn


def test_leaf_modules_import_only_leaf_modules():
    graph = module_graph()
    leaves = [name for name in graph if part_of(name) == "leaf"]
    assert "dfx.classes" in leaves and "dfx.threshold" in leaves
    upward = {
        name: sorted(graph[name] - set(leaves)) for name in leaves if graph[name] - set(leaves)
    }
    assert upward == {}


def test_no_modules_import_each_other_in_a_circle():
    graph = module_graph()
    circles = []
    state: dict[str, int] = {}  # 1 on the path being walked, 2 done

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                circles.append(path[path.index(target) :] + [target])
            elif target not in state:
                walk(target, [*path, target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node, [node])
    assert circles == []


def test_the_check_reads_real_imports():
    graph = module_graph()
    assert "dfx.engine.detector" in graph["dfx.api"]
    assert "dfx.engine.predictions" in graph["dfx.engine.explain"]
    assert part_of("dfx.checkpoint") == "files" and part_of("dfx.cli.predict") == "cli"
