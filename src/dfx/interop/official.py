"""Convert the official DeepFeatureX release's PyTorch state dicts into dfx model files.

The release saves plain state dicts of torchvision networks:

- a *base-model file* per class: the backbone with its final layer replaced by a 2-way
  linear layer (output 1 = the class, 0 = the others, as dfx's base models);
- the *complete-model file*: ``model1.*`` (dm extractor), ``model2.*`` (gan), ``model3.*``
  (real), each the backbone with its final linear layer removed, then ``convs.*`` and
  ``classifier.0.*`` of the fusion head, whose module indices dfx's head keeps.

Files are read with ``torch.load(weights_only=True)`` only. Common wrappings are undone:
a ``{"state_dict": ...}`` (or ``model_state_dict``, ``model``, ``net``) dict around the
weights, and the ``module.`` prefix that ``nn.DataParallel`` adds to every key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from dfx.checkpoint import (
    BASE_FORMAT,
    DETECTOR_FORMAT,
    ModelFile,
    safe_load,
    save_model_file,
    state_differences,
)
from dfx.classes import CLASSES
from dfx.errors import DfxError
from dfx.fingerprint import file_sha256
from dfx.models.backbones import build_network, get_spec
from dfx.models.detector import DeepFeatureX

OFFICIAL_EXTRACTORS: dict[str, str] = {"model1": "dm", "model2": "gan", "model3": "real"}
"""Prefix of each extractor in the official complete-model file → dfx class."""

OFFICIAL_HEAD_PREFIXES: tuple[str, ...] = ("convs.", "classifier.")
"""Prefixes of the fusion head's keys, the same in the official file and in dfx's head."""

WRAPPER_KEYS: tuple[str, ...] = ("state_dict", "model_state_dict", "model", "net")
"""Keys under which training scripts commonly nest a state dict."""

NVIDIA_BACKBONES: frozenset[str] = frozenset({"efficientnet_b0", "efficientnet_b4", "resnext101"})
"""Backbones that the official release takes from NVIDIA's DeepLearningExamples, not torchvision."""


@dataclass(frozen=True)
class SourceFile:
    """One official file that went into an import."""

    role: str
    """``complete``, ``dm``, ``gan`` or ``real``."""
    path: str
    """Absolute path of the file."""
    sha256: str
    """SHA-256 of the file's bytes, so the import can be traced to the exact release file."""


@dataclass
class ImportResult:
    """What :func:`import_official` wrote."""

    format: str
    """``dfx-detector`` (with a complete-model file) or ``dfx-base`` (base-model files only)."""
    backbone: str
    """Backbone registry name."""
    written: list[Path]
    """The dfx model file(s) written: one detector, or dm.pt, gan.pt and real.pt."""
    sources: list[SourceFile] = field(default_factory=list)
    """The official files read, with their hashes."""
    tensors: int = 0
    """Number of tensors in the written detector (or in each base model)."""


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The state dict in an official file, unwrapped; one sentence if it is anything else."""
    path = Path(path)
    if not path.is_file():
        raise DfxError(f"{path} does not exist.")
    loaded = safe_load(
        path,
        "a PyTorch state dict",
        "; a whole pickled model must be re-saved as model.state_dict()",
    )
    if isinstance(loaded, dict) and loaded.get("format") in (BASE_FORMAT, DETECTOR_FORMAT):
        raise DfxError(f"{path} is already a dfx model file ({loaded['format']}); use it as is.")
    for key in WRAPPER_KEYS:
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
            break
    if (
        not isinstance(loaded, dict)
        or not loaded
        or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in loaded.items())
    ):
        raise DfxError(f"{path} does not hold a state dict (a mapping of key names to tensors).")
    if all(key.startswith("module.") for key in loaded):
        loaded = {key.removeprefix("module."): value for key, value in loaded.items()}
    return dict(loaded)


def complete_to_detector_state(
    state: dict[str, Tensor], backbone: str, image_size: int | None = None, source: str = "file"
) -> dict[str, Tensor]:
    """An official complete-model state dict under dfx's :class:`DeepFeatureX` key names.

    A final 2-way layer left inside an extractor is not used by the detector and is dropped.
    """
    classifier = get_spec(backbone).classifier + "."
    renamed: dict[str, Tensor] = {}
    for key, value in state.items():
        prefix, _, rest = key.partition(".")
        if prefix in OFFICIAL_EXTRACTORS:
            if not rest.startswith(classifier):
                renamed[f"extractors.{OFFICIAL_EXTRACTORS[prefix]}.{rest}"] = value
        elif key.startswith(OFFICIAL_HEAD_PREFIXES):
            renamed[f"head.{key}"] = value
        else:
            renamed[key] = value  # reported as unknown under its own name below
    with torch.device("meta"):
        expected = DeepFeatureX(backbone, image_size).state_dict()
    hint = ""
    if not any(key.startswith("model1.") for key in state):
        hint = "it has no model1.* keys: a base-model file goes to `dm`, `gan` or `real`"
    return _fit(renamed, expected, _official_name, source, "complete-model", backbone, hint)


def base_to_network_state(
    state: dict[str, Tensor], backbone: str, image_size: int | None = None, source: str = "file"
) -> dict[str, Tensor]:
    """An official base-model state dict checked against the backbone with a 2-way layer."""
    with torch.device("meta"):
        expected = build_network(backbone, "none", image_size).state_dict()
    hint = ""
    if any(key.startswith("model1.") for key in state):
        hint = "it has model1.* keys: a complete-model file goes to `complete`"
    return _fit(state, expected, lambda key: key, source, "base-model", backbone, hint)


def import_official(
    backbone: str,
    out: str | Path,
    *,
    complete: str | Path | None = None,
    dm: str | Path | None = None,
    gan: str | Path | None = None,
    real: str | Path | None = None,
    image_size: int | None = None,
) -> ImportResult:
    """Convert official files into a dfx detector file, or into three dfx base-model files.

    With ``complete``: one detector file at ``out``; base-model files given beside it
    replace the matching extractors (their 2-way layer is dropped). Without it, all three
    base-model files are needed and ``out`` is a folder that receives ``dm.pt``, ``gan.pt``
    and ``real.pt`` for ``dfx train-fusion --base-dir``, since the fusion head's weights
    exist only in the complete-model file.
    """
    spec = get_spec(backbone)
    out = Path(out)
    bases = {name: Path(p) for name, p in zip(CLASSES, (dm, gan, real)) if p is not None}
    if complete is None and len(bases) < len(CLASSES):
        raise DfxError(
            "give `complete` (with optional `dm`, `gan` or `real` to replace extractors), "
            "or all three of `dm`, `gan` and `real`; the fusion head's weights are only in "
            "the complete-model file."
        )
    preprocessing = spec.preprocessing(image_size)
    size = preprocessing.input_size
    networks = {
        name: base_to_network_state(read_state_dict(path), backbone, size, str(path))
        for name, path in bases.items()
    }
    state = None
    if complete is not None:
        if out.is_dir():
            raise DfxError(f"`out` {out} is a folder; with `complete` it names the detector file.")
        state = complete_to_detector_state(read_state_dict(complete), backbone, size, str(complete))
    elif out.exists() and not out.is_dir():
        raise DfxError(f"`out` {out} is a file; without `complete` it must be a folder.")
    roles = ([("complete", Path(complete))] if complete is not None else []) + list(bases.items())
    sources = [SourceFile(role, str(path.resolve()), file_sha256(path)) for role, path in roles]
    config = {
        "imported": {
            "from": "official DeepFeatureX release",
            "backbone": backbone,
            "files": {s.role: {"path": s.path, "sha256": s.sha256} for s in sources},
        }
    }
    if state is None:
        written = [
            save_model_file(
                ModelFile(
                    BASE_FORMAT,
                    backbone,
                    ["others", name],
                    preprocessing,
                    network_state,
                    config,
                    {},
                    target=name,
                ),
                out / f"{name}.pt",
            )
            for name, network_state in networks.items()
        ]
        return ImportResult(BASE_FORMAT, backbone, written, sources, len(networks["dm"]))
    classifier = spec.classifier + "."
    for name, network_state in networks.items():
        prefix = f"extractors.{name}."
        state.update(
            {prefix + k: v for k, v in network_state.items() if not k.startswith(classifier)}
        )
    model_file = ModelFile(
        DETECTOR_FORMAT, backbone, list(CLASSES), preprocessing, state, config, {}
    )
    save_model_file(model_file, out)
    return ImportResult(DETECTOR_FORMAT, backbone, [out], sources, len(state))


def _official_name(key: str) -> str:
    """A dfx detector key under the name it has in the official complete-model file."""
    if key.startswith("head."):
        return key.removeprefix("head.")
    if key.startswith("extractors."):
        name, rest = key.removeprefix("extractors.").split(".", 1)
        official = {cls: prefix for prefix, cls in OFFICIAL_EXTRACTORS.items()}[name]
        return f"{official}.{rest}"
    return key


def _fit(
    state: dict[str, Tensor],
    expected: dict[str, Tensor],
    official_name,
    source: str,
    layout: str,
    backbone: str,
    hint: str,
) -> dict[str, Tensor]:
    """``state`` in the order of ``expected``, or one sentence naming every key that differs."""
    # Checkpoints from before PyTorch 0.4.1 lack BatchNorm's step counter; eval never reads it.
    problems = state_differences(
        state, expected, official_name, optional=lambda k: k.endswith("num_batches_tracked")
    )
    if problems:
        if not hint and backbone in NVIDIA_BACKBONES:
            hint = (
                f"the official release builds {backbone} from NVIDIA's DeepLearningExamples, "
                "whose layout is not torchvision's and cannot be imported"
            )
        hint = hint or "check `backbone`"
        raise DfxError(
            f"{source} does not fit the official {layout} layout of {backbone}: "
            f"{'; '.join(problems)} ({hint})."
        )
    fitted = {}
    for key, reference in expected.items():
        value = state.get(key)
        if value is None:  # a num_batches_tracked counter
            value = torch.zeros((), dtype=reference.dtype)
        fitted[key] = value.float() if value.is_floating_point() else value
    return fitted
