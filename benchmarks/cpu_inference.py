"""Benchmark: CPU inference paths side by side, on the same files, in one run.

Prints the CPU (model, the flags that matter, load average), then one row per path:

- ``official``: the official release's evaluation loop, reproduced: batch 1, no workers,
  ``eval()``, ``no_grad``, PIL ``Resize((S, S))`` + ``ToTensor`` + ``Normalize`` per image;
- ``dfx old``: ``Detector.run`` with the settings before tuning (torch fp32, batch 32,
  contiguous tensors);
- ``dfx default``: ``Detector.run`` as ``dfx evaluate`` runs it now;
- one row per candidate setting and installed runtime × precision: torch channels-last,
  other batch sizes, torch bf16 autocast, ONNX Runtime fp32, OpenVINO fp32 and bf16.

For each: images/s end to end (decoding included), ratio to the official loop, ratio to
its own model-only rate (the same batches already decoded), max |Δp| of the class
probabilities against torch fp32, and the share of decisions (argmax, and P(fake) >= t at
the detector's threshold t) that agree with torch fp32. A line gives decode +
preprocessing images/s on one core.

Weights are random unless --model names a detector file; images are synthetic PNG files
at the input size unless --data names a folder. Ratios are comparable within one run
only; absolute figures depend on the machine and on what else runs on it.

    python benchmarks/cpu_inference.py                               # densenet121, 256 px
    python benchmarks/cpu_inference.py --images 96 --batch-sizes 8,16,32
    python benchmarks/cpu_inference.py --backbone tiny --image-size 64 --images 64
    python benchmarks/cpu_inference.py --model dfx-demo/model.pt --data ../shared/wild
"""

# ruff: noqa: E402
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run_all import labelled_images, write_detector

from dfx import synthetic
from dfx.api import Detector, load_detector
from dfx.checkpoint import DETECTOR_FORMAT, load_model_file
from dfx.data.dataset import ImageDataset
from dfx.data.decoding import load_rgb
from dfx.engine.device import Placement, default_workers
from dfx.metrics import p_fake_of
from dfx.models import inference_settings

REPEATS = 1
"""Passes per measurement; the best counts (--repeats)."""

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_description() -> str:
    """CPU model, the vector flags that matter here, cores, load average (from lscpu)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return f"cpu: unknown (lscpu failed), {os.cpu_count()} CPUs"
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    flags = set(fields.get("Flags", "").split())
    present = [flag for flag in FLAGS if flag in flags]
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return (
        f"cpu: {fields.get('Model name', '?')} ({fields.get('Vendor ID', '?')}), "
        f"{fields.get('CPU(s)', '?')} CPUs; flags: {' '.join(present) or 'none of ' + str(FLAGS)}"
        f"\nload average (1, 5, 15 min): {load}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )


@dataclass
class Row:
    """One path's figures."""

    name: str
    images_per_s: float
    model_only_per_s: float
    probs: np.ndarray


def official_loop(
    network: torch.nn.Module, paths: list[Path], size: int
) -> tuple[float, np.ndarray]:
    """The official testing script's loop: one image at a time, decoded in the main process."""
    from torchvision import transforms

    transform = transforms.Compose(
        [
            transforms.Resize((size, size)),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    network.eval()
    best = float("inf")
    with torch.no_grad():
        network(transform(load_rgb(paths[0])).unsqueeze(0))  # warm-up, as for every path
        for _ in range(REPEATS):
            outputs = []
            started = time.perf_counter()
            for path in paths:
                image = load_rgb(path)
                logits = network(transform(image).unsqueeze(0))
                outputs.append(torch.softmax(logits, dim=1))
            best = min(best, time.perf_counter() - started)
    return len(paths) / best, torch.cat(outputs).numpy()


def run_path(detector: Detector, paths: list[Path], batch_size: int, workers: int) -> Row:
    """End-to-end and model-only images/s of ``detector``, and its probabilities."""
    detector.run(paths[:batch_size], batch_size=batch_size, workers=0)  # warm-up
    best = float("inf")
    for _ in range(REPEATS):
        started = time.perf_counter()
        outputs = detector.run(paths, batch_size=batch_size, workers=workers)
        best = min(best, time.perf_counter() - started)
    end_to_end = len(paths) / best
    dataset = ImageDataset(paths, None, detector.preprocessing)
    tensors = torch.stack([dataset[i][0] for i in range(len(dataset))])
    placement = detector.placement
    batches = [placement.to_device(batch) for batch in tensors.split(batch_size)]
    best = float("inf")
    with torch.inference_mode():
        for _ in range(REPEATS):
            started = time.perf_counter()
            for batch in batches:
                with placement.autocast():
                    detector.network(batch).float()
            best = min(best, time.perf_counter() - started)
    model_only = len(paths) / best
    return Row("", end_to_end, model_only, outputs.values.numpy())


def decode_rate(detector: Detector, paths: list[Path]) -> float:
    """Decode + preprocessing images/s on one core (the main process)."""
    dataset = ImageDataset(paths, None, detector.preprocessing)
    started = time.perf_counter()
    for i in range(len(dataset)):
        dataset[i]
    return len(paths) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="densenet121")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--data", type=Path, help="image folder instead of synthetic PNGs")
    parser.add_argument("--model", type=Path, help="a .pt detector instead of random weights")
    parser.add_argument(
        "--batch-sizes", default="8", help="extra CPU batch sizes to try (comma list)"
    )
    parser.add_argument("--workers", type=int, help=f"default: {default_workers()} here")
    parser.add_argument("--skip", default="", help="comma list of rows to leave out")
    parser.add_argument("--repeats", type=int, default=1, help="passes per figure; best counts")
    args = parser.parse_args()
    global REPEATS
    REPEATS = args.repeats
    skip = set(filter(None, args.skip.split(",")))
    print(cpu_description())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ.setdefault("DFX_CACHE_DIR", str(root / "cache"))
        model = args.model or write_detector(args.backbone, args.image_size, root / "model.pt")
        model_file = load_model_file(model, DETECTOR_FORMAT)
        size = model_file.preprocessing.input_size
        folder = args.data
        if folder is None:
            folder = root / "images"
            synthetic.write_dataset(folder, per_generator=-(-args.images // 6), image_size=size)
        paths = [image.path for image in labelled_images(folder, args.images)]
        workers = default_workers() if args.workers is None else args.workers
        reference = load_detector(model, "cpu", "fp32", runtime="torch")
        threshold = reference.resolve_threshold().value
        print(
            f"setting: {model_file.backbone} ({model_file.architecture}) at {size} px, "
            f"{len(paths)} images from {folder if args.data else 'synthetic PNG'}, "
            f"{workers} decoding workers; decode + preprocess on one core: "
            f"{decode_rate(reference, paths):.1f} img/s"
        )
        official_rate, official_probs = official_loop(reference.network, paths, size)
        rows = [Row("official batch-1 loop", official_rate, float("nan"), official_probs)]
        cpu = torch.device("cpu")

        def torch_row(name, batch_size, channels_last=False, amp=None):
            placement = Placement(cpu, amp, channels_last=channels_last)
            detector = Detector(reference.model_file, placement)
            row = run_path(detector, paths, batch_size, workers)
            row.name = name
            rows.append(row)
            print(f"  measured {name}", file=sys.stderr, flush=True)

        torch_row("dfx old: torch fp32 b32", 32)
        default = load_detector(model, "cpu")
        row = run_path(default, paths, default.batch_size(), workers)
        row.name = f"dfx default: {default.backend} b{default.batch_size()}"
        rows.append(row)
        for batch_size in [int(b) for b in args.batch_sizes.split(",") if b]:
            torch_row(f"torch fp32 b{batch_size}", batch_size)
            torch_row(f"torch fp32 channels-last b{batch_size}", batch_size, channels_last=True)
        batch_size = int(args.batch_sizes.split(",")[0] or 32)
        if "torch-bf16" not in skip:
            torch_row(f"torch bf16 channels-last b{batch_size}", batch_size, True, torch.bfloat16)
        for name, precision in (
            ("onnxruntime", "fp32"),
            ("openvino", "fp32"),
            ("openvino", "bf16"),
        ):
            if f"{name}-{precision}" in skip or not inference_settings.is_installed(name):
                print(f"  {name} {precision}: not installed or skipped", file=sys.stderr)
                continue
            started = time.perf_counter()
            detector = load_detector(model, "cpu", precision, runtime=name)
            print(
                f"  {name} {precision} ready in {time.perf_counter() - started:.1f} s "
                "(export to the cache, compile)",
                file=sys.stderr,
            )
            row = run_path(detector, paths, batch_size, workers)
            row.name = f"{name} {precision} b{batch_size}"
            rows.append(row)

    exact = rows[1].probs  # torch fp32, batch 32: the reference
    print(
        f"\n{'path':<34} {'img/s':>7} {'model img/s':>11} {'x official':>10} {'/ model-only':>12} "
        f"{'max|dp|':>9} {'argmax =':>9} {'p>=t =':>9}"
    )
    for row in rows:
        delta = float(np.abs(row.probs - exact).max())
        argmax = float((row.probs.argmax(1) == exact.argmax(1)).mean())
        decision = p_fake_of(row.probs) >= threshold
        decision = float((decision == (p_fake_of(exact) >= threshold)).mean())
        own = (
            row.images_per_s / row.model_only_per_s
            if row.model_only_per_s == row.model_only_per_s
            else float("nan")
        )
        print(
            f"{row.name:<34} {row.images_per_s:7.2f} {row.model_only_per_s:11.2f} "
            f"{row.images_per_s / official_rate:10.2f} "
            f"{own:12.2f} {delta:9.2g} {argmax:9.1%} {decision:9.1%}"
        )
    print(f"decisions p>=t at the detector's threshold t = {threshold:.4g}")
    print(f"\nload average at the end: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
