"""The options that several commands share, each declared once with one help text.

Groups of options (training, backbone, evaluation) are appended to a command's signature
by :func:`with_options`; the command receives them in ``**options`` and builds its config
from them with :func:`config_from`. Defaults come from the torch-free configs.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from dfx.cli.framework import hide_help_option_metavar
from dfx.engine.configs import BackboneTrainConfig, TrainConfig
from dfx.extras import requirement
from dfx.limits import DEFAULT_MAX_PIXELS
from dfx.models.inference_settings import BACKEND_EXTRAS, batch_size_help

_MANIFEST = typer.Option(
    "--manifest", "-m", metavar="FILE", help="Manifest CSV written by 'dfx split'."
)

ManifestOption = Annotated[Path, _MANIFEST]
OptionalManifest = Annotated[Path | None, _MANIFEST]
ModelOption = Annotated[
    str,
    typer.Option(
        "--model",
        "-M",
        envvar="DFX_MODEL",
        metavar="MODEL",
        help="Detector (train-fusion or train-baseline): a file, an https:// URL "
        "(#sha256=... pins it) or hf://ORG/REPO\\[@REVISION]/FILE; downloads are cached.",
    ),
]
Sha256Option = Annotated[
    str | None,
    typer.Option(
        "--sha256",
        metavar="HEX",
        help="Expected SHA-256 of the model file; a download that differs is deleted "
        "(needed for plain http:// URLs).",
    ),
]
ThresholdOption = Annotated[
    float | None,
    typer.Option(
        "--threshold",
        min=0.0,
        max=1.0,
        help="Call an image fake when P(fake) >= this (default: the model's calibrated one, "
        "0.5 for model files without one).",
    ),
]
RoleOption = Annotated[
    str,
    typer.Option(
        "--role",
        "--split",
        metavar="ROLE",
        help="Manifest role to evaluate: base, fusion or test (--split is its older name).",
    ),
]
Balanced = Annotated[
    bool,
    typer.Option(
        "--balanced/--no-balanced",
        help="Sample every label down to the smallest one (seeded), as the paper does.",
    ),
]
JsonFlag = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Results as JSON: on stdout instead of tables, or the format of --output FILE.",
    ),
]
"""``--json``, the same flag on every command that outputs data; it never takes a value."""
CsvFlag = Annotated[
    bool,
    typer.Option(
        "--csv",
        help="Headline metrics as CSV: on stdout instead of tables, or the format of --output.",
    ),
]
OutputFiles = Annotated[
    list[str] | None,
    typer.Option(
        "--output",
        "-o",
        metavar="FILE",
        help="Write the results to FILE ('-': stdout) in the format of its suffix "
        "(.json, .csv) or of --json/--csv; the tables still print. Repeatable.",
    ),
]
"""``-o/--output FILE``: where a command whose product is its results writes them."""


def artifact_option(help: str, metavar: str = "FILE", **extra) -> typer.models.OptionInfo:
    """``-o/--output`` of a command whose product is a file or folder (``--out`` too)."""
    return typer.Option("--output", "-o", "--out", help=help, metavar=metavar, **extra)


PlotsOption = Annotated[
    Path | None,
    typer.Option("--plots", metavar="DIR", help="Write the plots (PNG) and their points to DIR."),
]
"""``--plots DIR``, the same on every command that draws plots."""
Device = Annotated[str, typer.Option("--device", help="Where to run: auto, cpu, cuda or cuda:N.")]
Precision = Annotated[
    str,
    typer.Option(
        "--precision", help="Autocast: auto (bf16/fp16 on CUDA, fp32 on CPU), fp32, bf16, fp16."
    ),
]
BackendOption = Annotated[
    str,
    typer.Option(
        "--runtime",
        help="What runs the network: auto (ONNX Runtime for .onnx and, when installed, for "
        "DenseNet .pt files on a CPU; else torch), torch, onnxruntime or openvino (the "
        + " and ".join(escape(requirement(extra)) for extra in BACKEND_EXTRAS.values())
        + " extras).",
    ),
]
"""``--runtime``: the backend that does the arithmetic (:mod:`dfx.models.inference_settings`)."""
Workers = Annotated[
    int | None,
    typer.Option(
        "--workers", min=0, help="DataLoader worker processes (default: CPUs - 1, at most 16)."
    ),
]
InferenceBatchSize = Annotated[
    int | None,
    typer.Option("--batch-size", min=1, help=f"Images per step (default: {batch_size_help()})."),
]
TrainBatchSize = Annotated[
    int,
    typer.Option(
        "--batch-size",
        min=1,
        help="Samples per optimisation step; under torchrun, the global batch of all processes.",
    ),
]
Compile = Annotated[
    bool,
    typer.Option(
        "--compile", help="Compile the network with torch.compile (slow start, faster steps)."
    ),
]
Seed = Annotated[int, typer.Option("--seed", help="Seed for sampling, initialisation, shuffling.")]
Epochs = Annotated[int, typer.Option("--epochs", min=1, help="Training epochs.")]
LearningRate = Annotated[float, typer.Option("--lr", min=0.0, help="Adam learning rate.")]
WeightDecay = Annotated[float, typer.Option("--weight-decay", min=0.0, help="Adam weight decay.")]
LrStep = Annotated[
    int, typer.Option("--lr-step", min=0, help="StepLR period in epochs (0: constant rate).")
]
ValFraction = Annotated[
    float, typer.Option("--val-fraction", min=0.0, max=0.9, help="Share held out for validation.")
]
MaxPixels = Annotated[
    int,
    typer.Option(
        "--max-pixels",
        min=1,
        help="Skip images with more pixels (width × height) as possible decompression bombs.",
    ),
]
Resume = Annotated[
    bool,
    typer.Option("--resume", help="Continue from the state saved after the last completed epoch."),
]
AllowChanged = Annotated[
    bool,
    typer.Option(
        "--allow-changed",
        help="Skip manifest files that changed or vanished since 'dfx split' instead of stopping.",
    ),
]
Backbone = Annotated[
    str, typer.Option("--backbone", "-b", help="Backbone name ('dfx backbones' lists them).")
]
Weights = Annotated[
    str, typer.Option("--weights", help="Initial weights: imagenet, none or a state-dict file.")
]
ImageSize = Annotated[
    int | None, typer.Option("--image-size", min=16, help="Input side (default: backbone's).")
]


def _option(name: str, annotation, default) -> inspect.Parameter:
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
    )


EXECUTION_OPTIONS = (
    _option("device", Device, TrainConfig.device),
    _option("precision", Precision, TrainConfig.precision),
    _option("workers", Workers, TrainConfig.workers),
    _option("seed", Seed, TrainConfig.seed),
    _option("max_pixels", MaxPixels, DEFAULT_MAX_PIXELS),
    _option("allow_changed", AllowChanged, False),
)
"""Where and how a manifest-reading command runs."""

TRAINING_OPTIONS = (
    _option("epochs", Epochs, TrainConfig.epochs),
    _option("batch_size", TrainBatchSize, TrainConfig.batch_size),
    _option("lr", LearningRate, TrainConfig.lr),
    _option("weight_decay", WeightDecay, TrainConfig.weight_decay),
    _option("lr_step", LrStep, TrainConfig.lr_step),
    _option("val_fraction", ValFraction, TrainConfig.val_fraction),
    *EXECUTION_OPTIONS,
    _option("resume", Resume, False),
    _option("as_json", JsonFlag, False),
)
"""The optimisation, execution and output options of every training command."""

BACKBONE_OPTIONS = (
    _option("backbone", Backbone, BackboneTrainConfig.backbone),
    _option("weights", Weights, BackboneTrainConfig.weights),
    _option("image_size", ImageSize, BackboneTrainConfig.image_size),
)
"""The network of the commands that train a whole backbone."""

BACKBONE_TRAINING_OPTIONS = (*BACKBONE_OPTIONS, *TRAINING_OPTIONS)
"""Every option that train-base and train-baseline share."""

EVALUATION_OPTIONS = (
    _option("sha256", Sha256Option, None),
    _option("manifest", OptionalManifest, None),
    _option("role", RoleOption, "test"),
    _option("balanced", Balanced, True),
    _option("threshold", ThresholdOption, None),
    _option("as_json", JsonFlag, False),
    _option("as_csv", CsvFlag, False),
    _option("outputs", OutputFiles, None),
    _option("plots", PlotsOption, None),
    _option("backend", BackendOption, "auto"),
    *EXECUTION_OPTIONS,
)
"""The data, decision and output options of evaluate and the robustness commands."""


def with_options(*groups: tuple[inspect.Parameter, ...]):
    """Append option groups to a command's signature; it receives them in ``**options``."""

    def decorate(command):
        signature = inspect.signature(command, eval_str=True)
        own = [
            parameter
            for parameter in signature.parameters.values()
            if parameter.kind is not inspect.Parameter.VAR_KEYWORD
        ]
        shared = [parameter for group in groups for parameter in group]
        command.__signature__ = signature.replace(parameters=[*own, *shared])
        return command

    return decorate


def config_from(config_type, values: dict):
    """A config dataclass from the command's option values (the fields it names)."""
    names = {field.name for field in dataclasses.fields(config_type)}
    return config_type(**{name: value for name, value in values.items() if name in names})


def evaluation_options(values: dict, batch_size: int | None):
    """The shared evaluation options of evaluate and the robustness commands."""
    from dfx.engine.evaluation import EvaluationConfig

    return config_from(EvaluationConfig, values | {"batch_size": batch_size})


def read_stdin_paths(paths: list[str]) -> list[str]:
    """The PATH arguments with each ``-`` replaced by the paths read from stdin, one a line."""
    expanded = []
    for argument in paths:
        if argument == "-":
            expanded.extend(line.strip() for line in sys.stdin if line.strip())
        else:
            expanded.append(argument)
    return expanded


def readable_metavars(command) -> None:
    """Give every option of a command a plain metavar (FILE, N, X, TEXT; none for flags).

    The framework would show Python types (``<bool>``, ``<list[str]>``, ``<int range>``);
    an option that names its own metavar keeps it.
    """
    if not getattr(command, "_dfx_metavars", False):  # once per command object
        command._dfx_metavars = True
        hide_help_option_metavar(command)
    for parameter in command.params:
        if parameter.param_type_name == "argument":
            _plain_argument(parameter)
            continue
        if parameter.metavar is not None:
            continue
        descriptor = getattr(parameter, "type_descriptor", None)
        annotation = descriptor.annotation if descriptor is not None else str
        parameter.metavar = _metavar_of(annotation)


def _plain_argument(argument) -> None:
    """``PATH...`` in the usage line instead of ``{PATH}...``, and no Python type beside it."""
    words = (argument.metavar or argument.name.upper()) + ("..." if argument.nargs != 1 else "")
    usage = words if argument.required else f"[{words}]"
    argument._usage_display_name = lambda: usage
    argument.display_type_rich = lambda ctx: None


_WORDS = {bool: "", int: "N", float: "X", str: "TEXT", Path: "PATH"}


def _metavar_of(annotation) -> str:
    import typing

    arguments = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin is tuple:
        return " ".join(_metavar_of(a) for a in arguments)
    if arguments:  # list[X] (repeated: the help says so) or X | None
        return _metavar_of(arguments[0])
    return _WORDS.get(annotation, "TEXT")
