"""Benchmark: does each heatmap method find the GAN half of half-GAN, half-real composites?

Builds ``--count`` composites at the detector's input size from the synthetic generator
(:func:`dfx.synthetic.half_composites`), explains them for the target class gan with every
``dfx explain`` method, and prints, per method, the share of composites on which the gan
specialist's map puts at least ``--bound`` of its mass on the GAN half (a blank map counts as
a miss), the number of blank maps, the median share and the time per image. The issue's
target is 0.65 of the mass on >= 80% of composites, for a demo-sized model:

    dfx demo && python benchmarks/localisation.py                  # dfx-demo/model.pt, 100
    python benchmarks/localisation.py --model model.pt --count 100 --methods gradcam,layercam

The composites use dfx's simulated fingerprints, which only a model trained on the synthetic
set (``dfx demo``) has learnt; the figures say nothing about real generators.
"""

# ruff: noqa: E402
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cpu_inference import cpu_description

from dfx import synthetic
from dfx.api import load_detector
from dfx.engine.explain import METHODS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="dfx-demo/model.pt", help="a DeepFeatureX .pt file")
    parser.add_argument("--count", type=int, default=100, help="composites (default 100)")
    parser.add_argument("--seed", type=int, default=7, help="synthetic data seed (default 7)")
    parser.add_argument("--bound", type=float, default=0.65, help="share counted as localised")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated")
    args = parser.parse_args()
    methods = args.methods.split(",")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not Path(args.model).is_file():
        sys.exit(f"unknown method(s) {unknown}" if unknown else f"no model file {args.model}")
    detector = load_detector(args.model, "cpu", runtime="torch")
    size = detector.model_file.preprocessing.resize
    print(cpu_description())
    print(
        f"model: {args.model} ({detector.model_file.backbone}, {size} px); "
        f"{args.count} composites, data seed {args.seed}, target gan"
    )
    images, sides = synthetic.half_composites(args.count, image_size=size, seed=args.seed)
    detector.explain(images[:1], target="gan", method=methods[0])  # warm-up, not timed
    print(f"| method | localised (>= {args.bound}) | blank maps | median share | s per image |")
    print("|---|---|---|---|---|")
    for method in methods:
        start = time.perf_counter()
        explanations = detector.explain(images, target="gan", method=method)
        seconds = (time.perf_counter() - start) / len(images)
        maps = [e.heatmaps["gan"] for e in explanations]
        shares = np.array([synthetic.share_on_gan_half(m, s) for m, s in zip(maps, sides)])
        blank = sum(float(m.sum()) == 0 for m in maps)
        print(
            f"| {method} | {np.mean(shares >= args.bound):.0%} | {blank} "
            f"| {np.median(shares):.2f} | {seconds:.3f} |"
        )


if __name__ == "__main__":
    main()
