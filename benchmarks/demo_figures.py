"""The figures the docs quote from ``dfx demo``, measured by running it (never typed by hand).

Runs ``dfx demo`` (default settings, seed 0) into a temporary folder, then
``dfx jpeg-robustness`` on its model, and prints, as Markdown, every figure that
README.md, docs/demo.md and docs/usage.md quote: the CPU model (``lscpu``), the wall
time, the split per class × generator × role, the base models on the test images, the
fusion validation and threshold, the balanced test evaluation and the JPEG table.
The docs are updated from its output; ``--json`` prints the same figures as JSON, kept
as docs/demo-figures.json, which tests/test_first_use.py checks the docs against.

    python benchmarks/demo_figures.py
    python benchmarks/demo_figures.py --out /tmp/demo --json > docs/demo-figures.json
    python benchmarks/demo_figures.py --out /tmp/demo --collect      # figures of a past run
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROLES = ("base", "fusion", "test")
CLASSES = ("dm", "gan", "real")


def cpu_model() -> str:
    """The ``Model name`` line of ``lscpu`` (``unknown`` where lscpu is missing)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    for line in text.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def dfx(*args: str) -> tuple[str, float]:
    """Run ``python -m dfx -q ARGS``: its stdout and its wall time in seconds."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "dfx", "-q", *args], check=True, stdout=subprocess.PIPE, text=True
    )
    return done.stdout, time.perf_counter() - started


def measure(out: Path, run: bool = True) -> dict:
    """Run the demo (unless ``run`` is False: it ran into ``out`` already) and the JPEG
    sweep; the figures the docs quote."""
    from dfx.checkpoint import DETECTOR_FORMAT, load_model_file

    seconds = dfx("demo", "--out", str(out))[1] if run else None
    jpeg = out / "jpeg-robustness.json"
    if run or not jpeg.is_file():
        text, _ = dfx("jpeg-robustness", "-M", str(out / "model.pt"), "-m",
                      str(out / "manifest.csv"), "--workers", "0", "--json")  # fmt: skip
        jpeg.write_text(text)
    with open(out / "manifest.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(line for line in handle if not line.startswith("#")))
    split = Counter((row["label"], row["generator"], row["split"]) for row in rows)
    metrics = load_model_file(out / "model.pt", DETECTOR_FORMAT).metrics
    evaluation = json.loads((out / "evaluation.json").read_text())
    jpeg = json.loads(jpeg.read_text())
    confusion = evaluation["multiclass"]["confusion"]
    return {
        "cpu": cpu_model(),
        "seconds": None if seconds is None else round(seconds, 1),
        "images": len(rows),
        "split": [
            {
                "label": label,
                "generator": generator,
                **{role: split.get((label, generator, role), 0) for role in ROLES},
            }
            for label, generator in sorted({(k[0], k[1]) for k in split})
        ],  # fmt: skip
        "split_totals": {r: sum(n for k, n in split.items() if k[2] == r) for r in ROLES},
        "base_test": {name: metrics["base"][name].get("test") for name in CLASSES},
        "fusion_validation": {
            "n": metrics["validation"]["n"],
            "accuracy": metrics["validation"]["multiclass"]["accuracy"],
        },
        "threshold": metrics["threshold"]["value"],
        "best_epoch": metrics["best_epoch"],
        "test": {
            "n": evaluation["n"],
            "counts": evaluation["counts"],
            "accuracy": evaluation["multiclass"]["accuracy"],
            "correct": {name: confusion[i][i] for i, name in enumerate(CLASSES)},
            "confusion": confusion,
            "binary": {
                k: evaluation["binary"][k]
                for k in ("accuracy", "ap", "auc", "eer", "balanced_accuracy")
            },
            "at_threshold": evaluation["binary"]["at_threshold"],
        },  # fmt: skip
        "jpeg": [
            {
                "setting": row["perturbation"],
                "multiclass": (row["multiclass"] or {}).get("accuracy"),
                "binary": row["binary"]["accuracy"],
            }
            for row in jpeg["rows"]
        ],  # fmt: skip
    }


def pct(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{100 * value:.{digits}f}%"


def markdown(f: dict) -> str:
    """The figures as the Markdown the docs quote."""
    took = "" if f["seconds"] is None else f"; `dfx demo` took {f['seconds']:.0f} s"
    lines = [f"CPU: {f['cpu']}{took}.", "",
             f"The split of the {f['images']:,} images:", "",
             "| class | generator | base | fusion | test |", "|---|---|---|---|---|"]  # fmt: skip
    for row in f["split"]:
        lines.append(f"| {row['label']} | {row['generator']} | "
                     + " | ".join(str(row[r]) for r in ROLES) + " |")  # fmt: skip
    totals = f["split_totals"]
    lines.append("| **all** | | " + " | ".join(str(totals[r]) for r in ROLES) + " |")
    lines += ["", f"Base models on all {totals['test']} test images (%):", "",
              "| base model | accuracy | recall | precision | F1 |",
              "|---|---|---|---|---|"]  # fmt: skip
    for name, m in f["base_test"].items():
        m = m or {}
        cells = [f"{100 * m[k]:.2f}" if m.get(k) is not None else "—"
                 for k in ("accuracy", "recall", "precision", "f1")]  # fmt: skip
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    test, binary, at = f["test"], f["test"]["binary"], f["test"]["at_threshold"]
    per_class = test["counts"]["real"]
    correct = ", ".join(f"{n} {c}/{test['counts'][n]}" for n, c in test["correct"].items())
    lines += [
        "",
        f"- fusion validation ({f['fusion_validation']['n']} held-out fusion images): "
        f"{pct(f['fusion_validation']['accuracy'])} 3-class accuracy; threshold on "
        f"P(fake) {f['threshold']:.3f}; kept epoch {f['best_epoch']};",
        f"- test, raw: {pct(test['accuracy'], 2)} 3-class accuracy on {test['n']} images "
        f"(balanced, {per_class} per class): {correct}; confusion {test['confusion']}. "
        f"Binary accuracy {pct(binary['accuracy'])}, AP {pct(binary['ap'])}, AUC "
        f"{pct(binary['auc'])}, EER {pct(binary['eer'])}; at the threshold: accuracy "
        f"{pct(at['accuracy'])}, real {pct(at['real_accuracy'])}, fake "
        f"{pct(at['fake_accuracy'])}, balanced {pct(at['balanced_accuracy'])}.",
        "",
        "| setting | 3-class | binary |",
        "|---|---|---|",
    ]
    lines += [f"| {r['setting']} | {pct(r['multiclass'])} | {pct(r['binary'])} |"
              for r in f["jpeg"]]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="demo folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    parser.add_argument(
        "--collect", action="store_true", help="read the figures of a demo run into --out before"
    )
    args = parser.parse_args()
    if args.collect and args.out is None:
        parser.error("--collect needs --out")
    if args.out is not None:
        figures = measure(args.out, run=not args.collect)
    else:
        folder = tempfile.mkdtemp(prefix="dfx-demo-figures-")
        figures = measure(Path(folder) / "demo")
        if not args.keep:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(figures, indent=2) if args.json else markdown(figures))


if __name__ == "__main__":
    main()
