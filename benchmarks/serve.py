"""Benchmark: dfx serve under 1, 4 and 16 concurrent clients against Detector.predict.

Prints the CPU (lscpu), then the direct rate of batched ``Detector.predict`` on the files
(images/s, best of the passes, with ``dfx predict``'s default decoding processes and with
none), and for each number of clients the service's requests/s (one image a request),
latency p50 and p99, and the ratio of its rate to the faster direct one. The target: at
16 clients, at least 0.8 of the direct rate.

The service is the real command (``python -m dfx serve``) in its own process on
127.0.0.1 and a free port; the clients are threads of this process, each sending its
requests one after another. Without --model, a tiny detector is trained on the synthetic
set first (random base models, a fusion head trained for two epochs: seconds), or, with
--backbone, a detector of that backbone gets random weights (timing does not depend on
them); without --data, the images are synthetic PNGs at --image-size. Figures depend on
the machine and on what else runs on it; compare them within one run.

    python benchmarks/serve.py                                   # tiny model, 64 images
    python benchmarks/serve.py --model dfx-demo/model.pt --data ../shared/wild --images 256
    python benchmarks/serve.py --backbone resnet50 --image-size 224 --images 32
    python benchmarks/serve.py --clients 1,2,4,8,16,32 --max-batch 32
"""

# ruff: noqa: E402
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from cpu_inference import cpu_description
from fusion_training import write_base_models
from run_all import labelled_images, write_detector

from dfx import synthetic
from dfx.api import load_detector
from dfx.data.manifest import make_manifest
from dfx.engine.configs import FusionTrainConfig
from dfx.engine.fusion_training import train_fusion

SRC = Path(__file__).resolve().parents[1] / "src"


def tiny_model(root: Path, image_size: int) -> Path:
    """A tiny DeepFeatureX detector whose fusion head is trained on the synthetic set."""
    data = root / "train"
    synthetic.write_dataset(data, per_generator=20, image_size=image_size, seed=1)
    bases = write_base_models("tiny", image_size, root / "base")
    config = FusionTrainConfig(epochs=2, device="cpu", workers=0)
    return train_fusion(make_manifest(data), bases, config, out=root / "model.pt").path


def bench_files(args, root: Path) -> list[Path]:
    folder = args.data
    if folder is None:
        folder = root / "images"
        per_generator = -(-args.images // 6)
        synthetic.write_dataset(folder, per_generator=per_generator, image_size=args.image_size)
    return [image.path for image in labelled_images(folder, args.images)]


def direct_rates(model: Path, files: list[Path], repeats: int) -> dict[str, float]:
    """Images/s of batched Detector.predict on the files (decoding included), best pass:
    with its default decoding processes, as ``dfx predict`` runs, and with none."""
    detector = load_detector(model, "cpu")
    detector.predict(files[: detector.batch_size()])  # warm-up
    rates = {}
    for label, workers in (("default workers", None), ("no workers", 0)):
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            detector.predict(files, workers=workers)
            best = min(best, time.perf_counter() - started)
        rates[label] = len(files) / best
    return rates


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_service(model: Path, args) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [
        sys.executable, "-m", "dfx", "serve", "-M", str(model), "--device", "cpu",
        "--port", str(port), "--max-batch", str(args.max_batch),
        "--max-wait-ms", str(args.max_wait_ms),
        "--workers-per-model", str(args.workers_per_model),
    ]  # fmt: skip
    environment = os.environ | {"PYTHONPATH": str(SRC)}
    process = subprocess.Popen(
        command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"dfx serve ended with {process.returncode} before it was ready")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    sys.exit("dfx serve was not ready within 120 s")


def load_run(url: str, files: list[Path], clients: int, requests: int) -> dict:
    """``requests`` one-image requests from ``clients`` threads; rate and latencies."""
    payloads = [(f.name, f.read_bytes()) for f in files]
    latencies: list[float] = []
    failures = 0

    def session(client: int) -> None:
        nonlocal failures
        with httpx.Client(base_url=url, timeout=60) as http:
            for number in range(client, requests, clients):
                name, data = payloads[number % len(payloads)]
                started = time.perf_counter()
                response = http.post("/v1/predict", files=[("files", (name, data))])
                latencies.append(time.perf_counter() - started)
                failures += response.status_code != 200

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for done in [pool.submit(session, c) for c in range(clients)]:
            done.result(timeout=600)
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "rate": requests / elapsed,
        "p50": statistics.median(latencies),
        "p99": latencies[int(0.99 * (len(latencies) - 1))],
        "failures": failures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a detector file (default: a tiny one)")
    parser.add_argument("--backbone", help="random weights of this backbone instead")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--data", type=Path, help="image folder instead of synthetic PNGs")
    parser.add_argument("--images", type=int, default=64, help="images used (default 64)")
    parser.add_argument("--clients", default="1,4,16", help="comma list of client counts")
    parser.add_argument("--requests", type=int, help="requests per level (default: 4 × images)")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--workers-per-model", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2, help="direct passes; best counts")
    args = parser.parse_args()
    print(cpu_description())
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        if args.model is not None:
            model = args.model
        elif args.backbone is not None:
            model = write_detector(args.backbone, args.image_size, root / "model.pt")
        else:
            model = tiny_model(root, args.image_size)
        files = bench_files(args, root)
        requests = args.requests or 4 * len(files)
        rates = direct_rates(model, files, args.repeats)
        print(f"model {model.name}, {len(files)} images; {requests} requests per level")
        for label, rate in rates.items():
            print(f"direct Detector.predict, batched, {label}: {rate:8.1f} images/s")
        direct = max(rates.values())  # the ratios are taken against the faster
        process, url = start_service(model, args)
        try:
            load_run(url, files, 4, min(requests, 32))  # warm-up: connections, allocator
            for clients in [int(c) for c in args.clients.split(",")]:
                run = load_run(url, files, clients, requests)
                print(
                    f"dfx serve, {clients:2d} client(s): {run['rate']:8.1f} requests/s, "
                    f"p50 {1000 * run['p50']:6.1f} ms, p99 {1000 * run['p99']:6.1f} ms, "
                    f"{run['rate'] / direct:.2f}× direct"
                    + (f", {run['failures']} failed" if run["failures"] else "")
                )
        finally:
            process.terminate()
            process.wait(timeout=60)
    print("target: at 16 clients >= 0.80× direct")


if __name__ == "__main__":
    main()
