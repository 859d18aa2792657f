"""Benchmark: jpeg-robustness (raw + 5 QFs) against one evaluate pass over the same images.

dfx decodes every image once per robustness run and makes all variants from the decoded
image, so the run costs about (1 + number of QFs) network passes plus the JPEG round
trips, not (1 + number of QFs) full reads of the data set. Target: ratio <= 6.6.

    python benchmarks/jpeg_robustness.py                              # tiny, 256 px, 120 images
    python benchmarks/jpeg_robustness.py --backbone densenet121 --per-generator 4
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from dfx import synthetic
from dfx.api import load_detector
from dfx.checkpoint import DETECTOR_FORMAT, ModelFile, save_model_file
from dfx.classes import CLASSES
from dfx.data.perturbations import DEFAULT_QFS, jpeg_grid
from dfx.engine.evaluation import evaluate, images_from_folder
from dfx.engine.robustness import robustness
from dfx.models.backbones import get_spec
from dfx.models.detector import DeepFeatureX


def write_detector(backbone: str, image_size: int | None, path: Path) -> Path:
    """A randomly initialised detector file: timing does not depend on trained weights."""
    spec = get_spec(backbone)
    preprocessing = spec.preprocessing(image_size)
    network = DeepFeatureX(backbone, preprocessing.input_size)
    model_file = ModelFile(
        DETECTOR_FORMAT, backbone, list(CLASSES), preprocessing, network.state_dict(), {}, {}
    )
    return save_model_file(model_file, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="tiny")
    parser.add_argument("--image-size", type=int, default=None, help="network input side")
    parser.add_argument("--file-size", type=int, default=256, help="side of the image files")
    parser.add_argument("--per-generator", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--repeats", type=int, default=2, help="best of N timings")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        synthetic.write_dataset(
            root / "data", per_generator=args.per_generator, image_size=args.file_size, seed=0
        )
        model = write_detector(args.backbone, args.image_size or 256, root / "model.pt")
        detector = load_detector(model, args.device, args.precision)
        images, _ = images_from_folder(root / "data")
        options = {"balanced": False, "batch_size": args.batch_size, "workers": args.workers}
        evaluate(detector, images[:8], **options)  # warm-up: allocator, kernels, file cache

        def best(function) -> float:
            times = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                function()
                times.append(time.perf_counter() - started)
            return min(times)

        one_pass = best(lambda: evaluate(detector, images, **options))
        grid = jpeg_grid(list(DEFAULT_QFS))
        robust = best(lambda: robustness(detector, images, grid, **options))
    print(
        f"{len(images)} images of {args.file_size} px, {args.backbone} at "
        f"{detector.preprocessing.input_size} px on {detector.runtime.device}, "
        f"batch {args.batch_size}, workers {args.workers}"
    )
    print(f"evaluate (one pass):          {one_pass:8.2f} s")
    print(f"jpeg-robustness (raw + {len(grid)} QFs): {robust:8.2f} s")
    print(f"ratio jpeg-robustness / evaluate: {robust / one_pass:.2f}  (target <= 6.6)")


if __name__ == "__main__":
    main()
