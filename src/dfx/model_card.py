"""A Hugging Face model card for a dfx detector file: YAML metadata, then Markdown.

Everything in the card comes from the file itself (architecture, preprocessing, threshold,
training configuration and the metrics measured at training time) and from result documents
of ``dfx evaluate --json`` / ``dfx robustness --json`` that the caller passes along.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from dfx.checkpoint import ModelFile
from dfx.classes import CLASSES
from dfx.extras import install_command

CARD_TAGS = (
    "ai-generated-image-detection",
    "deepfake-detection",
    "image-forensics",
    "deepfeaturex",
    "dfx",
)
"""Hub tags every dfx card carries."""


@dataclass
class CardInputs:
    """What a model card is made of besides the model file."""

    file_name: str
    """The model file's name in the Hub repository."""
    sha256: str
    """The file's SHA-256, printed so users can pin it."""
    reference: str
    """How users name the file: ``hf://ORG/REPO[@REVISION]/FILE``."""
    license: str = "mit"
    """The Hub licence identifier of the weights."""
    results: list[tuple[str, dict]] = field(default_factory=list)
    """(name, document) pairs of ``evaluate --json`` or ``robustness --json`` outputs."""


@dataclass
class _Row:
    """One line of results: where it was measured and its headline figures."""

    name: str
    n: int | None
    figures: dict[str, float | None]


_FIGURES = (
    ("accuracy", "3-class accuracy", ("multiclass", "accuracy")),
    ("f1", "3-class macro F1", ("multiclass", "f1_macro")),
    ("accuracy", "real/fake accuracy", ("binary", "accuracy")),
    ("balanced_accuracy", "real/fake balanced accuracy", ("binary", "balanced_accuracy")),
    ("average_precision", "AP (fake positive)", ("binary", "ap")),
    ("roc_auc", "ROC-AUC", ("binary", "auc")),
    ("eer", "EER", ("binary", "eer")),
)
"""(Hub metric type, name, path in a metrics document) of the figures a card reports."""


def build_card(model_file: ModelFile, inputs: CardInputs) -> str:
    """The model card text: ``---`` YAML front matter ``---`` and Markdown."""
    training_rows = _training_rows(model_file)
    result_rows = [row for name, doc in inputs.results for row in _result_rows(name, doc)]
    rows = training_rows + result_rows
    metadata = {
        "license": inputs.license,
        "library_name": "dfx",
        "pipeline_tag": "image-classification",
        "tags": list(CARD_TAGS) + [model_file.backbone],
        "metrics": sorted({kind for kind, _, path in _FIGURES if _any_figure(rows, path)}),
        "model-index": [
            {
                "name": inputs.file_name,
                "results": [_index_entry(row) for row in rows],
            }
        ],
    }
    sections = [
        f"# {inputs.file_name}: a DeepFeatureX Net detector of AI-generated images",
        _summary(model_file),
        "## Model",
        _model_section(model_file),
        "## Training data and configuration",
        _training_section(model_file),
        "## Results",
        _results_section(model_file, training_rows, result_rows),
        "## Intended use and limitations",
        _LIMITATIONS,
        "## How to use",
        _usage(inputs),
        "## Citation",
        _CITATION,
    ]
    return f"---\n{to_yaml(metadata)}---\n\n" + "\n\n".join(sections) + "\n"


def _summary(model_file: ModelFile) -> str:
    kind = (
        f"three {model_file.backbone} feature extractors, each fine-tuned to specialise in one "
        "class, whose pooled features a Conv1d head fuses (DeepFeatureX Net, ICPR 2024)"
        if model_file.architecture == "deepfeaturex"
        else f"a single {model_file.backbone} backbone with a 3-class head (a baseline)"
    )
    return (
        f"A detector trained with [dfx](https://pypi.org/project/deepfeaturex/) "
        f"{model_file.dfx_version}: {kind}. It puts an image in one of three classes, "
        f"{', '.join(f'`{c}`' for c in CLASSES)} (diffusion-generated, GAN-generated, real), "
        "and gives P(fake) = p_dm + p_gan."
    )


def _model_section(model_file: ModelFile) -> str:
    p = model_file.preprocessing
    crop = f", centre crop {p.crop}" if p.crop else ""
    threshold = (
        f"{model_file.threshold:.4f} on P(fake), calibrated on validation data at training time"
        if model_file.threshold is not None
        else "none stored (0.5 is used)"
    )
    lines = [
        ("architecture", model_file.architecture),
        ("backbone", model_file.backbone),
        ("classes (output order)", ", ".join(model_file.classes)),
        ("preprocessing", f"RGB, resize to {p.resize}×{p.resize}{crop}, mean {list(p.mean)}, "
         f"std {list(p.std)}"),
        ("threshold", threshold),
        ("file format", f"{model_file.format}, loaded weights-only (no pickled code)"),
        ("written by", f"dfx {model_file.dfx_version}"),
    ]  # fmt: skip
    return _table(("", ""), lines)


def _training_section(model_file: ModelFile) -> str:
    counts = model_file.metrics.get("counts") or {}
    parts = []
    if counts:
        parts.append(
            "Images (or feature vectors) used: "
            + ", ".join(f"{k} {v}" for k, v in counts.items())
            + "."
        )
    if model_file.metrics.get("best_epoch"):
        parts.append(f"Weights kept from epoch {model_file.metrics['best_epoch']}.")
    parts.append(
        "The training configuration recorded in the file (the base models' under `base`):\n\n"
        "```json\n" + json.dumps(model_file.config, indent=2, sort_keys=True, default=str) + "\n```"
    )
    return "\n\n".join(parts)


def _training_rows(model_file: ModelFile) -> list[_Row]:
    metrics = model_file.metrics
    document = metrics.get("validation")
    if not isinstance(document, dict):
        return []
    return [_row("validation at training time", document)]


def _result_rows(name: str, document: dict) -> list[_Row]:
    if "sets" in document:  # evaluate with several --data sets
        return [_row(f"{name}: {s.get('name')}", s) for s in document["sets"]]
    if "rows" in document:  # jpeg-robustness / robustness
        return [_row(f"{name}: {r.get('perturbation')}", r) for r in document["rows"]]
    label = f"{name} (JPEG QF {document['qf']})" if document.get("qf") else name
    return [_row(label, document)]


def _row(name: str, document: dict) -> _Row:
    return _Row(name, document.get("n"), {label: _get(document, p) for _, label, p in _FIGURES})


def _get(document: dict, path: tuple[str, ...]) -> float | None:
    value = document
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return float(value) if isinstance(value, (int, float)) else None


def _any_figure(rows: list[_Row], path) -> bool:
    label = next(label for _, label, p in _FIGURES if p == path)
    return any(row.figures.get(label) is not None for row in rows)


def _index_entry(row: _Row) -> dict:
    return {
        "task": {"type": "image-classification", "name": "real / GAN / diffusion detection"},
        "dataset": {"type": "custom", "name": row.name},
        "metrics": [
            {"type": kind, "name": label, "value": round(row.figures[label], 6)}
            for kind, label, _ in _FIGURES
            if row.figures.get(label) is not None
        ],
    }


def _results_section(
    model_file: ModelFile, training_rows: list[_Row], result_rows: list[_Row]
) -> str:
    rows = training_rows + result_rows
    if not rows:
        return "The file stores no metrics."
    labels = [label for _, label, _ in _FIGURES]
    table = _table(
        ("measured on", "n", *labels),
        [
            (row.name, "" if row.n is None else str(row.n), *(_pct(row.figures[x]) for x in labels))
            for row in rows
        ],
    )
    note = (
        "All figures in %. The validation row was measured by dfx at training time on "
        "held-out images of the training data."
    )
    bases = _base_table(model_file)
    if bases:
        note += "\n\nThe base models, each telling its class from the others on the test images "
        note += "(the paper's Table 1), in %:\n\n" + bases
    if not result_rows:
        note += (
            "\n\nNo evaluation or robustness results are included: run `dfx evaluate --json` and "
            "`dfx robustness --json` and pass the JSON to `dfx card --results`."
        )
    return table + "\n\n" + note


def _base_table(model_file: ModelFile) -> str:
    bases = model_file.metrics.get("base") or {}
    figures = ("accuracy", "recall", "precision", "f1")
    rows = [
        (name, *(_pct(_get(metrics, ("test", f))) for f in figures))
        for name, metrics in bases.items()
        if isinstance(metrics, dict) and isinstance(metrics.get("test"), dict)
    ]
    return _table(("base model", *figures), rows) if rows else ""


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}"


def _table(header: tuple[str, ...], rows) -> str:
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *(line(r) for r in rows)])


def _usage(inputs: CardInputs) -> str:
    return (
        "```bash\n"
        f"{install_command('hub')}\n"
        f"dfx predict --model {inputs.reference} --sha256 {inputs.sha256} photo.jpg\n"
        "```\n\n"
        "The file is downloaded once into the Hugging Face cache and checked against its "
        f"SHA-256, `{inputs.sha256}`; pin a revision with `@REVISION` after the repository "
        "name. In Python:\n\n"
        "```python\n"
        "import dfx\n"
        f'detector = dfx.load_detector("{inputs.reference}", sha256="{inputs.sha256}")\n'
        'print(detector.predict(["photo.jpg"])[0].to_dict())\n'
        "```"
    )


_LIMITATIONS = """\
Use it to triage images in forensic work, trust-and-safety review and research, as one
signal among others, never as proof on its own.

- **Data.** It knows only the generators and cameras of its training data. Files trained on
  dfx's demo data learned *simulated* generator fingerprints: they show that the pipeline
  works and say nothing about real generators.
- **Unseen generators.** Accuracy on generators absent from training is typically much lower
  (the paper's Table 4); measure it with `dfx evaluate --data` on your own sets.
- **JPEG and other processing.** Compression, resizing, blurring and screenshots weaken the
  traces it relies on; see `dfx jpeg-robustness` and `dfx robustness`.
- **Threshold.** The calibrated threshold balances errors on the validation data; choose your
  own (`--threshold`) when false alarms and misses cost differently."""

_CITATION = """\
O. Pontorno, L. Guarnera, S. Battiato. *DeepFeatureX Net: Deep Features eXtractors based
Network for discriminating synthetic from real images.* ICPR 2024."""


def to_yaml(value, indent: int = 0) -> str:
    """Block-style YAML of plain data; strings are JSON-quoted (valid YAML scalars)."""
    pad = " " * indent
    if isinstance(value, dict):
        lines = []
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{key}:\n{to_yaml(item, indent + 2)}")
            else:
                lines.append(f"{pad}{key}: {_scalar(item)}\n")
        return "".join(lines)
    if isinstance(value, list):
        lines = []
        for item in value:
            if isinstance(item, (dict, list)) and item:
                body = to_yaml(item, indent + 2)
                lines.append(f"{pad}- {body[indent + 2 :]}")
            else:
                lines.append(f"{pad}- {_scalar(item)}\n")
        return "".join(lines)
    return f"{pad}{_scalar(value)}\n"


def _scalar(value) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    if isinstance(value, str) and _PLAIN.match(value) and value.lower() not in _YAML_WORDS:
        return value
    return json.dumps(value)


_PLAIN = re.compile(r"^[a-z][a-z0-9_-]*$")
_YAML_WORDS = {"true", "false", "null", "yes", "no", "on", "off", "y", "n"}
