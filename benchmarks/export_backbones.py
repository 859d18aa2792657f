"""Check: every registry backbone exports to ONNX, with its parity against torch.

For each backbone it writes a detector with random weights (the three-backbone
DeepFeatureX by default, or the one-backbone baseline with ``--architecture baseline``)
at a small input, runs ``dfx export``'s library call on it, and prints the export time,
the graph's size and the max |Δp| that export measured with ONNX Runtime; a backbone that
cannot be exported prints the one-sentence reason. Needs the ``onnx`` extra.

    python benchmarks/export_backbones.py
    python benchmarks/export_backbones.py --architecture baseline --backbones resnext101,vit_b_16
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
from run_all import write_detector

from dfx.engine.export import export_detector
from dfx.errors import DfxError
from dfx.models.registry import REGISTRY, get_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default=",".join(REGISTRY), help="comma list (default: all)")
    parser.add_argument("--architecture", default="deepfeaturex", help="or baseline")
    parser.add_argument("--image-size", type=int, default=64, help="ViT: 32 (its patch grid)")
    args = parser.parse_args()
    print(cpu_description())
    header = f"{'backbone':<16} {'architecture':<13} {'px':>4} {'export s':>9} {'MB':>7}"
    print(f"\n{header} {'max|dp|':>9}")
    for name in args.backbones.split(","):
        size = 32 if get_spec(name).vit else args.image_size
        with tempfile.TemporaryDirectory() as tmp:
            torch.manual_seed(0)
            model = write_detector(name, size, Path(tmp) / "m.pt", args.architecture)
            started = time.perf_counter()
            try:
                result = export_detector(model, Path(tmp) / "m.onnx")
            except DfxError as error:
                print(f"{name:<16} {args.architecture:<13} {size:>4} refused: {error}", flush=True)
                continue
            print(
                f"{name:<16} {args.architecture:<13} {size:>4} "
                f"{time.perf_counter() - started:9.1f} {result.size_bytes / 1e6:7.1f} "
                f"{result.max_abs_dp:9.2g}",
                flush=True,
            )


if __name__ == "__main__":
    main()
