"""Benchmark: what decoding in dfx serve's worker processes costs against a thread pool.

Starts a WorkerPool (as dfx serve does), reports its start-up time and each worker's memory,
then decodes the same synthetic images (a small PNG and a 4000 × 3000 JPEG photo-like
image) one at a time, and 16 at a time, in the workers and on a thread pool (the service's
decoding before the workers), for a 224 px network.

    python benchmarks/serve_pool.py [--workers 2] [--repeats 50]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from dfx.data.decoding import ImageBytes
from dfx.serve.pool import WorkerPool
from dfx.serve.tasks import decode_upload

MAX_PIXELS = 89_478_485
TARGET = 224


def encoded(size: tuple[int, int], fmt: str) -> ImageBytes:
    rng = np.random.default_rng(0)
    # Smooth noise: compresses like a photo, not like flat colour or white noise.
    small = rng.integers(0, 255, (size[1] // 16, size[0] // 16, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return ImageBytes(f"image.{fmt.lower()}", buffer.getvalue())


def vm_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def main(workers: int, repeats: int) -> None:
    loop = asyncio.get_running_loop()
    pool = WorkerPool(workers, workers, memory_mb=0)
    await loop.run_in_executor(None, pool.start)
    memory = ", ".join(f"{vm_rss_mb(pid):.0f}" for pid in pool.pids())
    print(f"start: {workers} workers in {pool.start_seconds:.2f} s; RSS each {memory} MiB")
    threads = ThreadPoolExecutor(workers)
    uploads = {
        "64x64 PNG": encoded((64, 64), "PNG"),
        "4000x3000 JPEG": encoded((4000, 3000), "JPEG"),
    }
    for name, upload in uploads.items():
        arguments = (upload, MAX_PIXELS, TARGET)

        async def in_pool(count: int, arguments=arguments) -> None:
            await asyncio.gather(*(pool.run(object(), 30, decode_upload, *arguments)
                                   for _ in range(count)))  # fmt: skip

        async def in_thread(count: int, arguments=arguments) -> None:
            await asyncio.gather(*(loop.run_in_executor(threads, decode_upload, *arguments)
                                   for _ in range(count)))  # fmt: skip

        for count in (1, 16):
            for label, run in (("workers", in_pool), ("threads", in_thread)):
                await run(count)  # warm
                times = []
                for _ in range(max(1, repeats // count)):
                    started = time.perf_counter()
                    await run(count)
                    times.append((time.perf_counter() - started) / count)
                per_image = 1000 * min(times)
                print(f"{name}, {count:2d} at a time, {label}: {per_image:.2f} ms per image")
    pool.close()
    threads.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=50)
    options = parser.parse_args()
    asyncio.run(main(options.workers, options.repeats))
