"""Benchmark: decoding with and without shrink-on-decode (JPEG draft, integer reduce).

For every image file under a folder, decode it and apply a model's preprocessing twice:
full decode then resize, and shrink-on-decode then resize. Prints the time per pass, the
largest pixel difference of the network inputs and, with --model, the largest difference
of the class probabilities.

    python benchmarks/decode.py /work/shared/wild                    # 256 px inputs
    python benchmarks/decode.py /work/shared/wild --model model.pt   # also compare outputs
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from PIL import Image

from dfx.data.decoding import load_rgb
from dfx.data.discovery import expand_inputs
from dfx.data.transforms import Preprocessing


def decode_all(files: list[Path], preprocessing: Preprocessing, shrink: bool) -> torch.Tensor:
    """The network inputs of ``files``, stacked."""
    size = preprocessing.resize if shrink else None
    return torch.stack([preprocessing(load_rgb(f, target_size=size)) for f in files])


def best_time(function, repeats: int) -> float:
    """The fastest of ``repeats`` runs (least disturbed by other processes)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", type=Path, help="a detector file: compare its outputs too")
    args = parser.parse_args()

    files, _ = expand_inputs([args.folder])
    preprocessing = Preprocessing(args.image_size)
    if args.model is not None:
        from dfx.api import load_detector

        detector = load_detector(args.model, "cpu", "fp32")
        preprocessing = detector.preprocessing
    megapixels = 0.0
    for f in files:
        with Image.open(f) as image:
            megapixels += image.width * image.height / 1e6
    print(f"files: {len(files)} ({megapixels:.1f} megapixels), inputs {preprocessing.resize} px")
    full = best_time(lambda: decode_all(files, preprocessing, False), args.repeats)
    shrunk = best_time(lambda: decode_all(files, preprocessing, True), args.repeats)
    print(f"full decode + resize: {full:.3f} s ({len(files) / full:.1f} images/s)")
    print(f"shrink-on-decode + resize: {shrunk:.3f} s ({len(files) / shrunk:.1f} images/s)")
    print(f"speed-up: {full / shrunk:.2f}x")
    a = decode_all(files, preprocessing, False)
    b = decode_all(files, preprocessing, True)
    std = torch.tensor(preprocessing.std).view(1, 3, 1, 1)
    pixels = ((a - b).abs() * std * 255).flatten(1)
    print(
        f"input difference, 0-255 scale: max {pixels.max():.1f}, "
        f"mean {pixels.mean():.3f}, worst image mean {pixels.mean(1).max():.3f}"
    )
    if args.model is not None:
        with torch.inference_mode():
            pa = torch.softmax(detector.network(a), 1)
            pb = torch.softmax(detector.network(b), 1)
        print(f"max class-probability difference: {(pa - pb).abs().max():.4f}")


if __name__ == "__main__":
    main()
