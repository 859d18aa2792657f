"""Benchmark: the performance figures of the issue, on whatever device this machine has.

Prints one figure per line (and the setting first):

1. evaluate throughput ÷ model-only forward throughput on identical batches (≥ 0.9),
2. train-fusion for N epochs ÷ its one feature-extraction pass (≤ 1.3),
   and base-model training ÷ model-only training steps (≥ 0.8 on a GPU),
3. jpeg-robustness (raw + 5 quality factors) ÷ one evaluate pass (≤ 6.6),
4. ``dfx --help`` wall time, the slowest ``dfx COMMAND --help``, and ``dfx backbones``
   (a static table, no torch) (each ≤ 0.5 s),
5. absolute evaluate images/s, with the backbone and image size.

Weights are random (``--weights none``): timing does not depend on them. Images are
synthetic PNG files at the input size unless --data names a folder of image files.

    python benchmarks/run_all.py                                   # densenet121, 256 px, 32 images
    python benchmarks/run_all.py --backbone tiny --image-size 64 --images 256
    python benchmarks/run_all.py --images 2048 --batch-size 256    # on a GPU
    python benchmarks/run_all.py --only evaluate,help
"""

# ruff: noqa: E402
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fusion_training import write_base_models

from dfx import synthetic
from dfx.api import Detector, load_detector
from dfx.checkpoint import DETECTOR_FORMAT, ModelFile, save_model_file
from dfx.classes import CLASSES
from dfx.cli import app
from dfx.data.dataset import ImageDataset, make_loader
from dfx.data.discovery import expand_inputs
from dfx.data.manifest import make_manifest
from dfx.data.perturbations import DEFAULT_QFS, jpeg_grid
from dfx.data.record import ImageRecord
from dfx.engine.configs import FusionTrainConfig, TrainConfig
from dfx.engine.device import default_workers, resolve_placement
from dfx.engine.evaluation import EvaluationConfig, evaluate
from dfx.engine.fusion_training import train_fusion
from dfx.engine.loop import fit
from dfx.engine.robustness import measure_robustness
from dfx.engine.training import make_optimizer
from dfx.models.backbones import build_network, get_spec
from dfx.models.detector import build_detector_network

FIGURES = ("evaluate", "jpeg", "train", "fusion", "help")
COMMANDS = tuple(command.name for command in app.registered_commands)


def write_detector(
    backbone: str, image_size: int | None, path: Path, architecture: str = "deepfeaturex"
) -> Path:
    """A detector file (DeepFeatureX, or a one-backbone baseline) with random weights."""
    spec = get_spec(backbone)
    preprocessing = spec.preprocessing(image_size)
    network = build_detector_network(architecture, backbone, preprocessing.input_size)
    model_file = ModelFile(
        DETECTOR_FORMAT,
        backbone,
        list(CLASSES),
        preprocessing,
        network.state_dict(),
        {},
        {},
        architecture=architecture,
    )
    return save_model_file(model_file, path)


def labelled_images(folder: Path, count: int) -> list[ImageRecord]:
    """Up to ``count`` image files of ``folder`` (labels do not matter for timing)."""
    files, _ = expand_inputs([folder])
    files = files[:count]
    return [ImageRecord(f, CLASSES[i % len(CLASSES)], "bench") for i, f in enumerate(files)]


def bench_images(args, root: Path) -> list[ImageRecord]:
    """``--images`` images of ``--data``, or of a synthetic set written under ``root``."""
    folder = args.data
    if folder is None:
        folder = root / "images"
        synthetic.write_dataset(
            folder, per_generator=-(-args.images // 6), image_size=args.image_size
        )
    return labelled_images(folder, args.images)


def timed(function) -> tuple[float, object]:
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def bench_options(args) -> EvaluationConfig:
    """All images (no balancing), with the benchmark's batch size and workers."""
    return EvaluationConfig(balanced=False, batch_size=args.batch_size, workers=args.workers)


def evaluate_seconds(detector: Detector, images, args, qf: int | None = None) -> float:
    """Wall time of one evaluate pass (decoding, transfers, forward passes, metrics)."""
    seconds, _ = timed(lambda: evaluate(detector, images, bench_options(args), qf=qf))
    return seconds


def model_only_seconds(detector: Detector, images, batch_size: int) -> float:
    """Wall time of the forward passes alone over the same batches, inputs already on device."""
    placement = detector.placement
    dataset = ImageDataset([image.path for image in images], None, detector.preprocessing)
    tensors = torch.stack([dataset[i][0] for i in range(len(dataset))])
    batches = [placement.to_device(b) for b in tensors.split(batch_size)]
    network = detector.network
    with torch.inference_mode():
        started = time.perf_counter()
        for batch in batches:
            with placement.autocast():
                network(batch).float().cpu()
        if placement.is_cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - started


def warm_up(detector: Detector, images, batch_size: int) -> None:
    """One forward pass at the batch size (cuDNN autotuning, torch.compile, allocator)."""
    detector.run([image.path for image in images[:batch_size]], batch_size=batch_size, workers=0)


def training_rates(images, args) -> tuple[float, float]:
    """Images/s of one base-model training epoch through ``fit`` and of the bare steps.

    Both train the same network on the same batches; the bare steps take inputs that are
    already decoded and on the device, so the ratio shows what the data pipeline costs.
    """
    runtime = resolve_placement(args.device, args.precision, args.compile)
    spec = get_spec(args.backbone)
    network = runtime.prepare(build_network(args.backbone, "none", args.image_size))
    optimizer, _ = make_optimizer(network.parameters(), TrainConfig())
    loss_fn = torch.nn.CrossEntropyLoss()
    paths = [image.path for image in images]
    targets = [i % 2 for i in range(len(images))]
    dataset = ImageDataset(paths, targets, spec.preprocessing(args.image_size))
    loader = make_loader(
        dataset, 32, shuffle=True, workers=args.workers, pin_memory=runtime.is_cuda
    )
    inputs = torch.stack([dataset[i][0] for i in range(len(dataset))])
    batches = [
        (runtime.to_device(x), runtime.to_device(y))
        for x, y in zip(inputs.split(32), torch.tensor(targets).split(32))
    ]

    def bare_steps() -> None:
        network.train()
        for x, y in batches:
            optimizer.zero_grad(set_to_none=True)
            with runtime.autocast():
                loss = loss_fn(network(x).float(), y)
            loss.backward()
            optimizer.step()
        if runtime.is_cuda:
            torch.cuda.synchronize()

    def one_epoch() -> None:
        fit(
            network,
            loader,
            None,
            epochs=1,
            optimizer=optimizer,
            scheduler=None,
            loss_fn=loss_fn,
            runtime=runtime,
        )

    # Warm-up (allocator, cuDNN autotuning, compilation) through fit first, as in real training:
    # its workers are forked while the process is still small and then persist. Forking after
    # the bare steps have filled the heap would charge copy-on-write page faults to fit.
    one_epoch()
    bare, _ = timed(bare_steps)
    fitted, _ = timed(one_epoch)
    return len(images) / fitted, len(images) / bare


def jpeg_robustness_seconds(detector: Detector, images, args) -> float:
    """Wall time of one jpeg-robustness run (raw + the default 5 QFs) on ``images``."""
    seconds, _ = timed(
        lambda: measure_robustness(
            detector, images, jpeg_grid(list(DEFAULT_QFS)), bench_options(args)
        )
    )
    return seconds


def help_seconds(arguments: list[str], repeats: int = 5) -> float:
    """Best wall time of ``python -m dfx ARGS`` (a fresh interpreter each time)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "dfx", *arguments],
            check=True,
            stdout=subprocess.DEVNULL,
            env=os.environ | {"COLUMNS": "100"},
        )
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="densenet121")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--images", type=int, default=32, help="images per evaluate pass")
    parser.add_argument("--data", type=Path, help="image folder to use instead of synthetic PNGs")
    parser.add_argument("--batch-size", type=int, help="default: the device's (32 CPU, 256 CUDA)")
    parser.add_argument(
        "--workers",
        type=int,
        help="default: as the commands choose (none for a single batch, else "
        f"{default_workers()} here)",
    )
    parser.add_argument("--epochs", type=int, default=50, help="fusion-head epochs")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the detector and the fusion head"
    )
    parser.add_argument(
        "--only", default=",".join(FIGURES), help="comma list of " + "/".join(FIGURES)
    )
    args = parser.parse_args()
    only = set(args.only.split(","))

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        detector = None
        if only & {"evaluate", "jpeg"}:
            detector = load_detector(
                write_detector(args.backbone, args.image_size, root / "model.pt"),
                args.device,
                args.precision,
                args.compile,
            )
            images = bench_images(args, root)
            batch_size = args.batch_size = detector.batch_size(args.batch_size)
            # Like the commands: no worker when everything fits in one batch.
            if args.workers is None:
                args.workers = default_workers() if len(images) > batch_size else 0
            workers = args.workers
            placement = detector.placement
            name = torch.cuda.get_device_name() if placement.is_cuda else "cpu"
            print(
                f"setting: {name} ({torch.get_num_threads()} threads), {args.backbone} at "
                f"{detector.preprocessing.input_size} px, {len(images)} images from "
                f"{'synthetic PNG' if args.data is None else args.data}, batch {batch_size}, "
                f"{workers} workers, precision {placement.amp_dtype or 'fp32'}"
                f"{', compiled' if args.compile else ''}"
            )
            warm_up(detector, images, batch_size)

        if "evaluate" in only:
            seconds = evaluate_seconds(detector, images, args)
            forward = model_only_seconds(detector, images, batch_size)
            print(
                f"evaluate / model-only throughput: {forward / seconds:.3f} "
                f"(evaluate {len(images) / seconds:.1f} img/s, forward only "
                f"{len(images) / forward:.1f} img/s; target >= 0.9)"
            )
            print(
                f"evaluate images/s: {len(images) / seconds:.1f} "
                f"({args.backbone}, {detector.preprocessing.input_size} px)"
            )

        if "jpeg" in only:
            raw = evaluate_seconds(detector, images, args)
            robust = jpeg_robustness_seconds(detector, images, args)
            print(f"jpeg-robustness / evaluate: {robust / raw:.2f} (target <= 6.6)")
            # What a per-QF loop costs instead: one raw pass and one full pass per QF.
            loop = raw + sum(evaluate_seconds(detector, images, args, qf) for qf in DEFAULT_QFS)
            print(
                f"evaluate raw + {len(DEFAULT_QFS)} x evaluate --qf, / evaluate: "
                f"{loop / raw:.2f} (reference for the above)"
            )

        if "train" in only:
            if detector is None:
                images = bench_images(args, root)
                args.workers = default_workers() if args.workers is None else args.workers
            fitted, bare = training_rates(images, args)
            print(
                f"base training / model-only training steps: {fitted / bare:.3f} "
                f"(fit {fitted:.1f} img/s, bare steps {bare:.1f} img/s, batch 32; "
                "target >= 0.8 on a GPU)"
            )

        if "fusion" in only:
            per_generator = max(2, round(args.images / 0.4 / 6))
            synthetic.write_dataset(
                root / "fusion",
                per_generator=per_generator,
                image_size=min(max(args.image_size, 32), 512),
            )
            paths = write_base_models(args.backbone, args.image_size, root / "base")
            config = FusionTrainConfig(
                epochs=args.epochs,
                device=args.device,
                precision=args.precision,
                workers=args.workers,
                compile=args.compile,
            )
            result = train_fusion(make_manifest(root / "fusion"), paths, config, out=root / "f.pt")
            ratio = (
                result.extraction_seconds + result.training_seconds
            ) / result.extraction_seconds
            n = result.counts["train"] + result.counts["val"]
            print(
                f"train-fusion {args.epochs} epochs / extraction pass: {ratio:.2f} "
                f"(extraction {result.extraction_seconds:.1f} s for {n} images, head "
                f"{result.training_seconds:.1f} s; target <= 1.3)"
            )

    if "help" in only:
        root_help = help_seconds(["--help"])
        slowest = max((help_seconds([c, "--help"], 3), c) for c in COMMANDS)
        print(
            f"dfx --help wall time: {root_help:.3f} s (slowest: dfx {slowest[1]} --help "
            f"{slowest[0]:.3f} s; target <= 0.5 s)"
        )
        print(f"dfx backbones wall time: {help_seconds(['backbones']):.3f} s (target <= 0.5 s)")


if __name__ == "__main__":
    main()
