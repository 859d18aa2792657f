"""Benchmark: the CPU defaults of one backbone per family, measured (batch size × layout).

For each backbone it times the feature network alone (random weights, fp32, inference
mode) on the same random batch at each batch size, contiguous and channels-last, and
prints images/s, the best setting, and the current default for comparison;
then the thread split: torch threads × decoding workers on ``Detector.run`` end to end.
The ``cpu_batch_size`` and ``cpu_channels_last`` of :mod:`dfx.models.inference_settings`
come from runs of this script
(docs/performance.md records them with the CPU).

    python benchmarks/cpu_defaults.py
    python benchmarks/cpu_defaults.py --backbones densenet121,resnet50 --images 32
"""

# ruff: noqa: E402
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cpu_inference import cpu_description
from run_all import labelled_images, write_detector

from dfx import synthetic
from dfx.api import Detector, load_detector
from dfx.models.backbones import build_network, to_feature_extractor
from dfx.models.inference_settings import settings_for
from dfx.models.registry import get_spec

FAMILIES = "densenet121,efficientnet_b0,resnet50,vit_b_16"


def rate(network: torch.nn.Module, images: torch.Tensor, batch_size: int, repeats: int) -> float:
    """Best images/s of ``network`` over ``images`` in batches of ``batch_size``."""
    batches = images.split(batch_size)
    best = float("inf")
    with torch.inference_mode():
        network(batches[0])  # warm-up: oneDNN picks and caches its kernels per shape
        for _ in range(repeats):
            started = time.perf_counter()
            for batch in batches:
                network(batch)
            best = min(best, time.perf_counter() - started)
    return len(images) / best


def layouts(name: str, batch_sizes: list[int], images: int, repeats: int) -> None:
    spec, settings, nan = get_spec(name), settings_for(name), float("nan")
    size = spec.preprocessing().input_size
    network = to_feature_extractor(build_network(name, "none"), name).eval()
    data = torch.randn(images, 3, size, size)
    figures = {}
    for channels_last in (False, True):
        layout = torch.channels_last if channels_last else torch.contiguous_format
        network = network.to(memory_format=layout)
        inputs = data.contiguous(memory_format=layout)
        for batch_size in batch_sizes:
            figures[(batch_size, channels_last)] = rate(network, inputs, batch_size, repeats)
    best = max(figures, key=figures.get)
    cells = "  ".join(
        f"b{b}{' cl' if cl else ''} {v:6.2f}" for (b, cl), v in sorted(figures.items())
    )
    print(f"{name:<16} {size:>4}px  {cells}")
    print(
        f"{'':<16} best: batch {best[0]}, {'channels-last' if best[1] else 'contiguous'} "
        f"{figures[best]:.2f} img/s; default: batch {settings.cpu_batch_size}, "
        f"{'channels-last' if settings.cpu_channels_last else 'contiguous'} "
        f"{figures.get((settings.cpu_batch_size, settings.cpu_channels_last), nan):.2f} img/s",
        flush=True,
    )


def thread_split(backbone: str, images: int) -> None:
    """Detector.run end to end with each split of the CPUs between torch and decoding."""
    cpus = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = write_detector(backbone, None, root / "model.pt")
        folder = root / "images"
        size = get_spec(backbone).preprocessing().input_size
        synthetic.write_dataset(folder, per_generator=-(-images // 6), image_size=size)
        paths = [image.path for image in labelled_images(folder, images)]
        default = load_detector(model, "cpu")
        batch_size = default.batch_size()
        print(f"\nthread split, {backbone} detector, batch {batch_size}, {len(paths)} PNG files:")
        for threads in sorted({1, cpus}):
            for workers in (0, 1, 2):
                torch.set_num_threads(threads)
                detector = Detector(default.model_file, default.placement)
                detector.run(paths[:batch_size], batch_size=batch_size, workers=0)
                started = time.perf_counter()
                detector.run(paths, batch_size=batch_size, workers=workers)
                elapsed = time.perf_counter() - started
                print(
                    f"  torch threads {threads}, decoding workers {workers}: "
                    f"{len(paths) / elapsed:6.2f} img/s",
                    flush=True,
                )
        torch.set_num_threads(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backbones", default=FAMILIES, help=f"comma list (default {FAMILIES}; '' to skip)"
    )
    parser.add_argument("--batch-sizes", default="1,4,8,16,32")
    parser.add_argument("--images", type=int, default=32, help="images per measurement")
    parser.add_argument("--repeats", type=int, default=2, help="passes per figure; best counts")
    parser.add_argument("--split-backbone", default="densenet121", help="'' to skip the split")
    args = parser.parse_args()
    print(cpu_description())
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    print("\nfeature network alone, fp32, img/s (b: batch size, cl: channels-last):")
    for name in filter(None, args.backbones.split(",")):
        layouts(name, batch_sizes, args.images, args.repeats)
    if args.split_backbone:
        thread_split(args.split_backbone, args.images)


if __name__ == "__main__":
    main()
