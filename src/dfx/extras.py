"""The optional extras of the ``deepfeaturex`` distribution, and the one way to ask for one.

A module that needs an extra's packages calls :func:`require` before importing them, so
that a core install answers with one sentence naming ``deepfeaturex[EXTRA]`` instead of a
traceback. A module that imports them at its top declares ``REQUIRES_EXTRA = "EXTRA"`` and
is only imported after such a call. ``tests/test_dependencies.py`` holds every import of
``src/dfx`` to these rules. Torch-free, so the command line can check before loading torch.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from dfx.errors import DfxError

DISTRIBUTION = "deepfeaturex"
"""The name dfx is installed under (``dfx`` on PyPI is an unrelated project)."""


@dataclass(frozen=True)
class Extra:
    """One optional extra: the modules it brings and what they are for."""

    name: str
    """The extra's name in ``pip install "deepfeaturex[NAME]"``."""
    modules: tuple[str, ...]
    """Modules that must be findable for the extra to count as installed."""
    packages: str
    """The packages as a reader knows them, for the hint."""
    purpose: str
    """What needs them, as the subject of the hint's sentence."""


EXTRAS: dict[str, Extra] = {
    extra.name: extra
    for extra in (
        Extra(
            "serve",
            ("fastapi", "starlette", "uvicorn", "python_multipart"),
            "FastAPI and uvicorn",
            "dfx serve",
        ),
        # captum.attr too: a captum whose attribution module cannot load is as good as none.
        Extra("explain", ("captum", "captum.attr"), "captum", "dfx explain"),
        Extra(
            "onnx",
            ("onnx", "onnxruntime"),
            "onnx and ONNX Runtime",
            "ONNX support (dfx export, .onnx detector files, --runtime onnxruntime)",
        ),
        Extra("openvino", ("openvino", "onnx"), "OpenVINO", "the openvino runtime"),
        Extra("hub", ("huggingface_hub",), "huggingface_hub", "an hf:// model reference"),
        Extra("c2pa", ("c2pa",), "c2pa-python", "checking C2PA signatures"),
    )
}
"""Every extra whose absence dfx explains, by name."""


def requirement(name: str) -> str:
    """How pip names extra ``name``: ``deepfeaturex[NAME]``."""
    return f"{DISTRIBUTION}[{EXTRAS[name].name}]"


def install_command(name: str) -> str:
    """The pip command that installs extra ``name``."""
    return f'pip install "{requirement(name)}"'


def missing_extra_message(name: str) -> str:
    """The one sentence that says extra ``name`` is missing and how to install it."""
    extra = EXTRAS[name]
    verb = "are" if " and " in extra.packages else "is"
    return f"{extra.purpose} needs {extra.packages}, which {verb} not installed: " + (
        f"{install_command(name)}."
    )


def is_installed(name: str, module: str | None = None) -> bool:
    """Whether every module of extra ``name`` can be imported (with ``module``: that one)."""
    if module is not None and module not in EXTRAS[name].modules:
        raise ValueError(f"extra {name!r} does not bring the module {module!r}")
    return all(_findable(m) for m in ((module,) if module else EXTRAS[name].modules))


def require(name: str, module: str | None = None) -> None:
    """Fail with one sentence naming ``deepfeaturex[NAME]`` unless extra ``name`` is installed.

    With ``module``, only that one of the extra's modules is needed (the ``onnx`` package,
    which the onnx and the openvino extras both bring, reads graphs for either).
    """
    if not is_installed(name, module):
        raise MissingExtra(name)


class MissingExtra(DfxError):
    """An optional extra is not installed; the message is the install hint."""

    def __init__(self, name: str) -> None:
        super().__init__(missing_extra_message(name))
        self.extra = name


def _findable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent that fails to import, or a broken stub
        return False
