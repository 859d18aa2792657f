"""Apply each known fault of the method to a copy of the code and name the tests it fails.

Not part of the suite: the faults that issue 18's probe found unnoticed, those of the
training facts (JPEG quality, optimizer, epochs, kept weights, hold-out, normalisation),
each a small, plausible mistake in a fixed fact of the method, and mistakes in the suite
itself (a test that puts src/ on PYTHONPATH). For every fault the script copies the
repository's files into a temporary folder, makes the change there (the working tree is
never touched), runs the tests that should catch it against that copy, and prints the
tests that failed; a fault no test catches is reported as MISSED and the exit status is 1.
The same tests first run on an unchanged copy, which must pass: otherwise a failure would
say nothing about the fault.

    python tools/fault_probe.py                  # all faults
    python tools/fault_probe.py --only jpeg-420,binary-alpha
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mutation import _copy_tree  # noqa: E402

FACTS = "tests/test_method_facts.py"


@dataclass(frozen=True)
class Fault:
    """One deliberate mistake: a text replacement in one file, and the tests to run."""

    name: str
    """Short name, for --only."""
    what: str
    """The mistake in words."""
    path: str
    """File to change, relative to the repository root."""
    old: str
    """Text that must occur exactly once in the file."""
    new: str
    """What replaces it."""
    tests: tuple[str, ...] = (FACTS,)
    """Test files or node ids to run against the faulty copy."""


FAULTS = (
    Fault(
        "fusion-unweighted",
        "fusion trained with an unweighted cross entropy",
        "src/dfx/engine/fusion_training.py",
        "nn.CrossEntropyLoss(weight=weights)",
        "nn.CrossEntropyLoss()",
    ),
    Fault(
        "baseline-unweighted",
        "baseline trained with an unweighted cross entropy",
        "src/dfx/engine/baseline_training.py",
        "nn.CrossEntropyLoss(weight=weights)",
        "nn.CrossEntropyLoss()",
    ),
    Fault(
        "jpeg-420",
        "JPEG perturbations written with 4:2:0 chroma",
        "src/dfx/data/perturbations.py",
        "subsampling=0",
        "subsampling=2",
        (FACTS, "tests/test_perturbations.py"),
    ),
    Fault(
        "base-85-15",
        "base-model sets drawn about 85:15 instead of 90:10",
        "src/dfx/engine/base_training.py",
        "negative_fraction / (1 - negative_fraction)",
        "0.15 / 0.85",
    ),
    Fault(
        "hash-roles",
        "split roles drawn from Python's hash(), which changes per process",
        "src/dfx/data/manifest.py",
        'int.from_bytes(digest[:8], "big") / 2**64',
        "(hash((seed, key)) % 2**61) / 2**61",
    ),
    Fault(
        "binary-alpha",
        "transparency composited as a binary mask",
        "src/dfx/data/decoding.py",
        'background.paste(image, mask=image.getchannel("A"))',
        'background.paste(image, mask=image.getchannel("A").point(lambda a: 255 * (a >= 128)))',
    ),
    Fault(
        "exif-wrong-way",
        "EXIF orientations 6 and 8 turned the wrong way",
        "src/dfx/data/decoding.py",
        "turn = _TRANSPOSE.get(orientation)",
        "turn = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}.get(\n"
        "        orientation, _TRANSPOSE.get(orientation)\n"
        "    )",
    ),
    Fault(
        "rotation-clockwise",
        "the rotation perturbation turning clockwise",
        "src/dfx/data/perturbations.py",
        "image.rotate(self.degrees,",
        "image.rotate(-self.degrees,",
        (FACTS, "tests/test_perturbations.py"),
    ),
    Fault(
        "blurk-ignores-k",
        "blurk:K ignoring K",
        "src/dfx/data/perturbations.py",
        "self.kernel or 2 * math.ceil(3 * self.sigma) + 1",
        "2 * math.ceil(3 * self.sigma) + 1",
        (FACTS, "tests/test_perturbations.py"),
    ),
    Fault(
        "jpeg-quality-90",
        "JPEG perturbations written at quality 90 whatever the factor asked",
        "src/dfx/data/perturbations.py",
        "quality=self.quality",
        "quality=90",
        (FACTS, "tests/test_perturbations.py"),
    ),
    Fault(
        "adam-no-decay",
        "Adam without weight decay by default",
        "src/dfx/engine/configs.py",
        "weight_decay: float = 1e-3",
        "weight_decay: float = 0.0",
    ),
    Fault(
        "40-epochs",
        "40 training epochs by default instead of 50",
        "src/dfx/engine/configs.py",
        "epochs: int = 50",
        "epochs: int = 40",
    ),
    Fault(
        "last-epoch-kept",
        "the last epoch's weights kept instead of the best epoch's",
        "src/dfx/engine/loop.py",
        "if criterion < best[0]:",
        "if True:",
    ),
    Fault(
        "holdout-70-30",
        "a 70/30 train/validation hold-out instead of 80/20",
        "src/dfx/engine/configs.py",
        "val_fraction: float = 0.2",
        "val_fraction: float = 0.3",
    ),
    Fault(
        "no-normalisation",
        "preprocessing without the ImageNet mean/std normalisation",
        "src/dfx/data/transforms.py",
        "return TF.normalize(tensor, list(self.mean), list(self.std))",
        "return tensor",
    ),
    Fault(
        "pythonpath-src",
        "PYTHONPATH=src reintroduced in one test (it would test src/, not the installed dfx)",
        "tests/test_integrity.py",
        'subprocess.run([sys.executable, "-c", script], timeout=60)',
        'subprocess.run([sys.executable, "-c", script], timeout=60,\n'
        '                          env=os.environ | {"PYTHONPATH": "src"})',
        ("tests/test_packaging.py::test_no_test_puts_src_on_pythonpath",),
    ),
)


def probe(fault: Fault | None, tests, root: Path, timeout: float) -> tuple[list[str], float]:
    """The ids of the tests that fail with the fault (None: no fault), and the seconds taken."""
    with tempfile.TemporaryDirectory(prefix="dfx-fault-") as folder:
        copy = Path(folder)
        _copy_tree(root, copy)
        if fault is not None:
            target = copy / fault.path
            text = target.read_text()
            if text.count(fault.old) != 1:
                raise SystemExit(f"{fault.name}: {fault.old!r} is not once in {fault.path}")
            target.write_text(text.replace(fault.old, fault.new))
        environment = {**os.environ, "PYTHONPATH": str(copy / "src")}
        started = time.perf_counter()
        try:
            result = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider",
                 *tests],
                cwd=copy, env=environment, capture_output=True, text=True, timeout=timeout,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return [f"(no result within {timeout:.0f} s)"], time.perf_counter() - started
        failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", result.stdout, flags=re.MULTILINE)
        if result.returncode != 0 and not failed:
            failed = [f"(pytest exit status {result.returncode})"]
        return failed, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated fault names")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per fault")
    args = parser.parse_args()
    wanted = set(args.only.split(",")) if args.only else {f.name for f in FAULTS}
    unknown = wanted - {f.name for f in FAULTS}
    if unknown:
        raise SystemExit(f"unknown faults: {', '.join(sorted(unknown))}")
    root = Path(__file__).resolve().parent.parent
    chosen = [fault for fault in FAULTS if fault.name in wanted]
    every_test = sorted({test for fault in chosen for test in fault.tests})
    failed, seconds = probe(None, every_test, root, args.timeout)
    if failed:
        raise SystemExit(f"the unchanged code fails {', '.join(failed)}: fix that first")
    print(f"no fault: {', '.join(every_test)} pass ({seconds:.0f} s)", flush=True)
    missed = []
    for fault in chosen:
        failed, seconds = probe(fault, fault.tests, root, args.timeout)
        verdict = "caught" if failed else "MISSED"
        print(f"{fault.name}: {fault.what}: {verdict} ({seconds:.0f} s)", flush=True)
        for test in failed:
            print(f"    {test}")
        if not failed:
            missed.append(fault.name)
    print(f"{len(wanted) - len(missed)} of {len(wanted)} faults caught")
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
