"""Benchmark: training step rate with N torchrun processes against one process.

Runs ``dfx train-baseline`` (one backbone on all training images, the loop train-base
uses) on a synthetic data set, first as a plain single process, then under
``torchrun --standalone --nproc-per-node N``, with the same global batch. It reads the
per-epoch wall times from the history files, leaves out the first epoch (start-up,
cuDNN autotuning, worker start), and prints images/s, the speed-up and the scaling
efficiency (speed-up / N).

    python benchmarks/distributed.py --device cpu --processes 2                   # gloo
    python benchmarks/distributed.py --device cuda --processes 8 --backbone densenet121 \\
        --image-size 256 --batch-size 256 --per-generator 500                      # NCCL
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from dfx import synthetic
from dfx.data.manifest import make_manifest, write_manifest


def train(processes: int, manifest: Path, out: Path, args: argparse.Namespace):
    """Train with ``processes`` processes: (mean seconds of the timed epochs, images)."""
    dfx = [sys.executable, "-m", "dfx"]
    if processes > 1:
        dfx = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        dfx += ["--nproc-per-node", str(processes), "-m", "dfx"]
    command = [
        *dfx, "-q", "train-baseline", "-m", str(manifest), "-o", str(out),
        "--backbone", args.backbone, "--weights", "none", "--image-size", str(args.image_size),
        "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
        "--val-fraction", "0.05", "--device", args.device,
        *(["--precision", args.precision] if args.precision else []),
        *(["--workers", str(args.workers)] if args.workers is not None else []),
    ]  # fmt: skip
    env = dict(os.environ)
    if args.device == "cpu":
        # Split the cores among the processes, as torchrun's one thread each would not.
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // processes))
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    history = [json.loads(line) for line in out.with_suffix(".history.jsonl").open()]
    timed = history[1:]
    images = torch.load(out, weights_only=True)["metrics"]["counts"]["train"]
    return sum(record["seconds"] for record in timed) / len(timed), images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2, help="torchrun processes")
    parser.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL)")
    parser.add_argument("--backbone", default="tiny")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32, help="global batch")
    parser.add_argument("--per-generator", type=int, default=100, help="images per generator")
    parser.add_argument("--epochs", type=int, default=3, help="epochs (the first is not timed)")
    parser.add_argument("--precision", default=None)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch is not timed.")

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        synthetic.write_dataset(
            root / "data", per_generator=args.per_generator, image_size=args.image_size
        )
        # Every image trains the baseline: base and fusion roles only.
        manifest = write_manifest(
            make_manifest(root / "data", ratios=(0.5, 0.5, 0.0)), root / "manifest.csv"
        )
        rates = {}
        for processes in (1, args.processes):
            seconds, images = train(processes, manifest, root / f"p{processes}.pt", args)
            rates[processes] = images / seconds
    print(
        f"train-baseline {args.backbone} {args.image_size}px, global batch {args.batch_size}, "
        f"{args.device}, {images} training images, epochs 2-{args.epochs} timed"
    )
    print(f"{'processes':>9}  {'images/s':>9}  {'speed-up':>8}  {'efficiency':>10}")
    for processes, rate in rates.items():
        speedup = rate / rates[1]
        print(f"{processes:>9}  {rate:>9.1f}  {speedup:>8.2f}  {speedup / processes:>10.2f}")


if __name__ == "__main__":
    main()
