"""Benchmark: train-fusion for N epochs against its one feature-extraction pass.

dfx computes the frozen base models' features once and trains the head on the cache;
the official code re-runs the three backbones on every image in every epoch (about
``epochs`` × the extraction pass). This prints the measured ratio

    (feature extraction + head training) / feature extraction

for a chosen backbone and image size, plus the arithmetic that bounds it.

    python benchmarks/fusion_training.py                       # densenet121, 256 px, 48 images
    python benchmarks/fusion_training.py --backbone tiny --image-size 64 --images 600
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from dfx import synthetic
from dfx.checkpoint import BASE_FORMAT, ModelFile, save_model_file
from dfx.classes import CLASSES
from dfx.data.manifest import make_manifest
from dfx.engine.configs import FusionTrainConfig
from dfx.engine.fusion_training import train_fusion
from dfx.models.backbones import build_network, get_spec
from dfx.models.fusion import CONV_LAYERS


def write_base_models(backbone: str, image_size: int, out: Path) -> dict[str, Path]:
    """Randomly initialised base-model files: timing does not depend on trained weights."""
    spec = get_spec(backbone)
    paths = {}
    for name in CLASSES:
        network = build_network(backbone, "none", image_size)
        model_file = ModelFile(
            BASE_FORMAT,
            backbone,
            ["others", name],
            spec.preprocessing(image_size),
            network.state_dict(),
            {},
            {},
            target=name,
        )
        paths[name] = save_model_file(model_file, out / f"{name}.pt")
    return paths


def head_macs_per_sample(feature_dim: int) -> int:
    """Multiply-accumulates of one fusion-head forward pass."""
    length, macs = feature_dim, 0
    for c_in, c_out, kernel, stride in CONV_LAYERS:
        length = (length + 2 - kernel) // stride + 1
        macs += c_in * c_out * kernel * length
    return macs + CONV_LAYERS[-1][1] * 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="densenet121")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--images", type=int, default=48, help="fusion-split images (approx.)")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # The fusion role takes ~40% of the images; six generators share them.
        per_generator = max(2, round(args.images / 0.4 / 6))
        synthetic.write_dataset(
            root / "data",
            per_generator=per_generator,
            image_size=min(max(args.image_size, 32), 512),
        )
        manifest = make_manifest(root / "data")
        paths = write_base_models(args.backbone, args.image_size, root / "base")
        config = FusionTrainConfig(
            epochs=args.epochs, device=args.device, precision=args.precision, workers=None
        )
        started = time.perf_counter()
        result = train_fusion(manifest, paths, config, out=root / "model.pt")
        total = time.perf_counter() - started

    n = result.counts["train"] + result.counts["val"]
    dim = get_spec(args.backbone).feature_dim
    head_gmacs = head_macs_per_sample(dim) / 1e9
    print(
        f"device: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'} "
        f"({torch.get_num_threads()} threads)"
    )
    print(
        f"setting: {args.backbone} at {args.image_size} px, {n} fusion images, {args.epochs} epochs"
    )
    print(
        f"feature extraction pass: {result.extraction_seconds:.2f} s "
        f"({n / result.extraction_seconds:.1f} images/s through 3 backbones)"
    )
    print(
        f"head training, {args.epochs} epochs on cached features: {result.training_seconds:.2f} s"
    )
    print(f"train-fusion wall time: {total:.2f} s (includes loading and saving)")
    ratio = (result.extraction_seconds + result.training_seconds) / result.extraction_seconds
    print(f"ratio (extraction + head training) / extraction: {ratio:.2f}")
    print(f"official-style estimate (backbones re-run every epoch): ~{args.epochs + ratio - 1:.0f}")
    train_share = result.counts["train"] / n
    print(
        f"head arithmetic: {head_gmacs:.3f} GMAC forward per sample; training it "
        f"{args.epochs} epochs ≈ {3 * head_gmacs * args.epochs * train_share:.1f} GMAC "
        "per fusion image"
    )


if __name__ == "__main__":
    main()
