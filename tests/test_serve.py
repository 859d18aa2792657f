"""dfx serve: the API through FastAPI's test client, a real server under load, the page in
headless Chromium, and the command line.

Servers listen on 127.0.0.1 on a free port and are stopped by the test that started them;
every blocking call has a timeout.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from dfx.api import load_detector
from dfx.fingerprint import file_sha256
from dfx.serve import MicroBatcher, QueueFull, ServeConfig, create_app
from dfx.serve.pool import TaskFailed, TaskTimeout, WorkerPool
from dfx.serve.server import max_connections, uvicorn_config
from dfx.serve.uploads import UploadError, read_uploads
from tests import awkward
from tests.compare import assert_same_up_to_rounding
from tests.helpers import DFX, assert_user_error, invoke, live_server

TIMEOUT = 30.0
"""Seconds any one request, start or stop may take before the test fails."""
MAX_PIXELS = 500_000
"""The services' --max-pixels: awkward.BIG (1,000 × 1,000) is over it."""
BAD = ("truncated.png", "text_named.png", "empty.png", awkward.BIG)


@pytest.fixture(scope="module")
def detector(trained):
    return load_detector(trained["model"], "cpu")


@pytest.fixture(scope="module")
def good(data_dir) -> list[Path]:
    """Two images of each class of the synthetic set."""
    return [
        path
        for label in ("dm", "gan", "real")
        for path in sorted((data_dir / label).rglob("*.png"))[:2]
    ]


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> list[Path]:
    """Truncated, not an image, empty, and over the services' pixel limit."""
    corpus = awkward.write_corpus(tmp_path_factory.mktemp("awkward"))
    return [corpus / name for name in BAD]


@pytest.fixture(scope="module")
def expected(detector, good, bad) -> dict[str, dict]:
    """File name → the record of Detector.predict on the file, named by its file name."""
    predictions = detector.predict([*good, *bad], max_pixels=MAX_PIXELS, workers=0)
    return {Path(p.path).name: p.to_dict() | {"path": Path(p.path).name} for p in predictions}


def settings_for(trained, **changes) -> ServeConfig:
    model = Path(trained["model"])
    fields = {"max_pixels": MAX_PIXELS, "model_name": model.name}
    return ServeConfig(**(fields | {"model_sha256": file_sha256(model)} | changes))


def wait_ready(get, timeout: float = TIMEOUT) -> None:
    """Poll /readyz (``get(path)`` → response) until it says 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if get("/readyz").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError(f"not ready within {timeout} s")


@pytest.fixture(scope="module")
def client(detector, trained):
    with TestClient(create_app(detector, settings_for(trained))) as test_client:
        wait_ready(test_client.get)
        yield test_client


def form(*paths: Path) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (p.name, p.read_bytes(), "application/octet-stream")) for p in paths]


def assert_error(response, status: int, error: str | None = None) -> dict:
    """An error response: the status, JSON ``{"error", "detail"}`` and nothing else."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"} and body["detail"], body
    if error is not None:
        assert body["error"] == error, body
    return body


# The API, endpoint by endpoint.


def test_health_readiness_and_the_model_description(client, detector, trained):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    described = client.get("/v1/model").json()
    model = described["model"]
    assert model["classes"] == ["dm", "gan", "real"]
    assert model["backbone"] == "tiny" and model["architecture"] == "deepfeaturex"
    assert model["sha256"] == file_sha256(trained["model"])
    assert model["threshold"] == {"value": detector.threshold, "source": "model"}
    assert model["preprocessing"] == detector.preprocessing.to_dict()
    assert model["metrics"].keys() == detector.model_file.metrics.keys()
    from dfx import __version__

    assert described["dfx_version"] == __version__
    assert described["limits"]["max_pixels"] == MAX_PIXELS


def test_predict_gives_the_records_of_predict_in_upload_order(client, good, bad, expected):
    uploads = [good[0], bad[0], *good[1:3], bad[1], bad[2], good[3], bad[3], *good[4:]]
    response = client.post("/v1/predict", files=form(*uploads))
    assert response.status_code == 200
    records = response.json()
    assert [r["path"] for r in records] == [p.name for p in uploads]
    for record, path in zip(records, uploads):
        assert_same_up_to_rounding(record, expected[path.name], path.name)
    reasons = {r["path"]: r["error"] for r in records if r["error"]}
    assert reasons["truncated.png"].startswith("corrupt or truncated image")
    assert reasons["text_named.png"] == "not an image Pillow can decode"
    assert reasons["empty.png"] == "empty file (0 bytes)"
    assert "> the limit of 500,000" in reasons[awkward.BIG]


def test_a_request_threshold_decides_that_request_only(client, good):
    everything = client.post("/v1/predict?threshold=0", files=form(*good)).json()
    nothing = client.post("/v1/predict?threshold=1", files=form(*good)).json()
    assert all(r["fake"] for r in everything)
    assert not any(r["fake"] for r in nothing if r["p_fake"] < 1)
    assert_error(client.post("/v1/predict?threshold=2", files=form(good[0])), 400)
    assert_error(client.post("/v1/predict?threshold=x", files=form(good[0])), 400)


def test_explain_gives_the_record_of_explain_and_its_pictures(client, detector, good):
    response = client.post("/v1/explain", files=form(good[2]))
    assert response.status_code == 200, response.text
    record = response.json()
    pictures = record.pop("images")
    assert record.pop("threshold") == detector.threshold
    [direct] = detector.explain([good[2]], workers=0)
    assert_same_up_to_rounding(record, direct.to_dict() | {"path": good[2].name})
    assert set(pictures) == {"dm", "gan", "real", "sheet"}
    for key, encoded in pictures.items():
        picture = Image.open(io.BytesIO(base64.b64decode(encoded)))
        assert picture.format == "PNG"
        if key != "sheet":
            assert list(picture.size) == record["size"], key


def test_explain_takes_the_target_and_method_of_the_command(client, detector, good):
    query = {"target": "gan", "method": "gradcam-relative"}
    response = client.post("/v1/explain", params=query, files=form(good[0]))
    assert response.status_code == 200, response.text
    record = response.json()
    assert (record["target"], record["method"]) == ("gan", "gradcam-relative")
    [direct] = detector.explain([good[0]], workers=0, **query)
    assert record["shares"] == pytest.approx(direct.shares, abs=1e-5)
    for name, value in (("target", "fake"), ("method", "saliency")):
        body = assert_error(
            client.post("/v1/explain", params={name: value}, files=form(good[0])), 400
        )
        assert f"`{name}` {value!r} is not one of" in body["detail"]
    from dfx.engine.explain import METHODS

    parameters = client.get("/openapi.json").json()["paths"]["/v1/explain"]["post"]["parameters"]
    method_help = next(p["description"] for p in parameters if p["name"] == "method")
    assert all(method in method_help for method in METHODS)  # the API documents every method


def test_explain_of_an_unusable_image_is_415_or_422(client, good, bad):
    by_name = {p.name: p for p in bad}
    assert_error(client.post("/v1/explain", files=form(by_name["text_named.png"])), 415)
    for name in ("truncated.png", "empty.png", awkward.BIG):
        body = assert_error(client.post("/v1/explain", files=form(by_name[name])), 422)
        assert body["detail"].startswith(f"{name}: ")
    assert_error(client.post("/v1/explain", files=form(*good[:2])), 400, "one image")


def test_malformed_requests_are_4xx_json(client, good):
    assert_error(client.post("/v1/predict", files=[]), 415)  # no form at all
    assert_error(client.post("/v1/predict", json={"files": []}), 415, "unsupported media type")
    other_field = [("photo", (good[0].name, good[0].read_bytes(), "image/png"))]
    assert_error(client.post("/v1/predict", files=other_field), 400, "no image")
    garbage = {"content-type": "multipart/form-data; boundary=xyz"}
    assert_error(client.post("/v1/predict", content=b"no parts here", headers=garbage), 400)
    no_boundary = {"content-type": "multipart/form-data"}
    assert_error(client.post("/v1/predict", content=b"--x\r\n", headers=no_boundary), 400)
    assert_error(client.get("/v1/predict"), 405)
    assert_error(client.get("/v2/predict"), 404)


def test_bodies_over_the_limit_are_413(detector, trained, good):
    app = create_app(detector, settings_for(trained, max_upload_mb=0.01, max_files=2))
    with TestClient(app) as small:
        wait_ready(small.get)
        big = [("files", ("big.png", b"\0" * 20_000, "image/png"))]
        assert_error(small.post("/v1/predict", files=big), 413, "request too large")
        assert_error(small.post("/v1/predict", files=form(*good[:3])), 413, "too many files")
        assert small.post("/v1/predict", files=form(*good[:2])).status_code == 200


def test_the_limit_is_enforced_while_the_body_arrives():
    """An endless body is refused once it passes the limit, without reading the rest."""

    class EndlessUpload:
        headers = {"content-type": "multipart/form-data; boundary=b"}
        chunks = 0

        async def stream(self):
            yield b'--b\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n\r\n'
            while True:
                self.chunks += 1
                yield b"\0" * 1024

    request = EndlessUpload()
    with pytest.raises(UploadError) as refused:
        asyncio.run(asyncio.wait_for(read_uploads(request, 10 * 1024, 8), TIMEOUT))
    assert refused.value.status == 413 and request.chunks <= 11


def test_a_token_guards_the_api_and_nothing_else(detector, trained, good):
    app = create_app(detector, settings_for(trained, token="s3cret-token"))
    with TestClient(app) as guarded:
        wait_ready(guarded.get)
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
            response = guarded.post("/v1/predict", files=form(good[0]), headers=headers)
            assert_error(response, 401, "unauthorized")
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert_error(guarded.get("/v1/model"), 401)
        right = {"Authorization": "Bearer s3cret-token"}
        assert guarded.post("/v1/predict", files=form(good[0]), headers=right).status_code == 200
        assert guarded.get("/v1/model", headers=right).json()["auth"] is True
        assert guarded.get("/healthz").status_code == 200 and guarded.get("/").status_code == 200


def test_not_ready_until_loaded_and_warmed_up(detector, trained, good):
    loaded = threading.Event()

    def load():
        loaded.wait(TIMEOUT)
        return detector

    with TestClient(create_app(load, settings_for(trained))) as starting:
        try:
            response = starting.get("/readyz")
            assert_error(response, 503, "not ready")
            assert int(response.headers["Retry-After"]) >= 1
            assert_error(starting.post("/v1/predict", files=form(good[0])), 503, "not ready")
            assert starting.get("/healthz").status_code == 200
        finally:
            loaded.set()
        wait_ready(starting.get)
        assert starting.post("/v1/predict", files=form(good[0])).status_code == 200


class HeldDetector:
    """The detector, whose predict waits for ``release`` while ``hold`` is set (and says
    that it has been reached through ``entered``)."""

    def __init__(self, detector) -> None:
        self._detector = detector
        self.hold, self.entered, self.release = (threading.Event() for _ in range(3))

    def __getattr__(self, name):
        return getattr(self._detector, name)

    def predict(self, *args, **kwargs):
        if self.hold.is_set():
            self.entered.set()
            self.release.wait(TIMEOUT)
        return self._detector.predict(*args, **kwargs)


def test_no_result_within_the_request_timeout_is_504(detector, trained, good):
    held = HeldDetector(detector)
    with TestClient(create_app(held, settings_for(trained, request_timeout_s=1))) as slow:
        wait_ready(slow.get)
        held.hold.set()
        try:
            started = time.monotonic()
            body = assert_error(slow.post("/v1/predict", files=form(good[0])), 504, "timeout")
            assert time.monotonic() - started < TIMEOUT and held.entered.is_set()
            assert body["detail"] == "no result within 1 s."
        finally:
            held.hold.clear()
            held.release.set()
        assert slow.post("/v1/predict", files=form(good[0])).status_code == 200


def test_requests_while_shutting_down_get_503_and_the_one_in_flight_finishes(
    detector, trained, good, expected
):
    held = HeldDetector(detector)
    answers = {}
    with ThreadPoolExecutor(2) as pool:
        with TestClient(create_app(held, settings_for(trained))) as stopping:
            wait_ready(stopping.get)
            held.hold.set()
            in_flight = pool.submit(stopping.post, "/v1/predict", files=form(good[0]))
            assert held.entered.wait(TIMEOUT)

            def during_shutdown():
                try:
                    deadline = time.monotonic() + TIMEOUT
                    while (ready := stopping.get("/readyz")).status_code == 200:
                        assert time.monotonic() < deadline, "shutdown did not begin"
                        time.sleep(0.02)
                    answers["readyz"] = ready
                    answers["predict"] = stopping.post("/v1/predict", files=form(good[1]))
                finally:
                    held.release.set()

            late = pool.submit(during_shutdown)
        # Leaving the block shut the application down, which waited for the held request.
        late.result(TIMEOUT)
        first = in_flight.result(TIMEOUT)
    for name in ("readyz", "predict"):
        assert_error(answers[name], 503, "shutting down")
        assert int(answers[name].headers["Retry-After"]) >= 1
    assert first.status_code == 200
    assert_same_up_to_rounding(first.json(), [expected[good[0].name]])


def test_explain_without_the_explain_extra_is_501(client, good, monkeypatch):
    for module in ("captum", "captum.attr"):
        monkeypatch.setitem(sys.modules, module, None)  # import captum.attr fails
    body = assert_error(client.post("/v1/explain", files=form(good[0])), 501, "not installed")
    assert 'pip install "deepfeaturex[explain]"' in body["detail"]
    assert client.post("/v1/predict", files=form(good[0])).status_code == 200


def test_a_decode_past_the_decode_timeout_is_an_error_record(detector, trained, good, tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (2000, 2000, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "noise.png")  # about 12 MB, tens of ms to decode
    settings = settings_for(trained, decode_timeout_s=0.005, max_pixels=None)
    with TestClient(create_app(detector, settings)) as strict:
        wait_ready(strict.get)
        response = strict.post("/v1/predict", files=form(tmp_path / "noise.png", good[0]))
        assert response.status_code == 200, response.text
        slow, small = response.json()
        assert slow["error"] == "decoding took longer than 0.005 s", slow
        assert slow["path"] == "noise.png" and slow.get("label") is None
        assert small["error"] is None or small["error"] == "decoding took longer than 0.005 s"
    # The limit is the service's own: the default 10 s decodes the same upload.
    with TestClient(create_app(detector, settings_for(trained, max_pixels=None))) as usual:
        wait_ready(usual.get)
        [record] = usual.post("/v1/predict", files=form(tmp_path / "noise.png")).json()
        assert record["error"] is None and record["label"] in ("dm", "gan", "real")


def test_a_full_queue_is_503_and_health_answers_while_the_model_works(detector, trained, good):
    app = create_app(detector, settings_for(trained, max_queue=1, max_files=1, max_wait_ms=0))
    with TestClient(app) as busy, ThreadPoolExecutor(2) as pool:
        wait_ready(busy.get)
        batcher = app.state.service.batcher
        working, release = threading.Event(), threading.Event()
        run = batcher.run_batch

        def slow(images):
            working.set()
            release.wait(TIMEOUT)
            return run(images)

        batcher.run_batch = slow
        try:
            first = pool.submit(busy.post, "/v1/predict", files=form(good[0]))
            assert working.wait(TIMEOUT)
            started = time.monotonic()
            assert busy.get("/healthz").status_code == 200  # the event loop is free
            assert time.monotonic() - started < 5
            second = pool.submit(busy.post, "/v1/predict", files=form(good[1]))
            deadline = time.monotonic() + TIMEOUT
            while batcher.queued < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            refused = busy.post("/v1/predict", files=form(good[2]))
            assert_error(refused, 503, "busy")
            assert int(refused.headers["Retry-After"]) >= 1
        finally:
            release.set()
        assert first.result(TIMEOUT).status_code == 200
        assert second.result(TIMEOUT).status_code == 200


def test_the_batcher_groups_concurrent_items_and_keeps_their_order():
    calls: list[list[int]] = []

    def double(items):
        calls.append(list(items))
        return [2 * item for item in items]

    batcher = MicroBatcher(double, max_batch=8, max_wait_s=0.2, max_queue=20)

    async def main():
        return await asyncio.gather(*(batcher.submit([i, 100 + i]) for i in range(4)))

    try:
        batcher.announce(8)  # the first item waits for the seven announced after it
        results = asyncio.run(asyncio.wait_for(main(), TIMEOUT))
        batcher.withdraw(8)
        assert results == [[2 * i, 200 + 2 * i] for i in range(4)]
        assert len(calls) == 1 and sorted(calls[0]) == sorted([*range(4), *range(100, 104)])

        async def overfill():
            return await batcher.submit(list(range(21)))

        with pytest.raises(QueueFull):
            asyncio.run(asyncio.wait_for(overfill(), TIMEOUT))
    finally:
        assert batcher.close(TIMEOUT)


def test_a_job_run_alone_never_runs_beside_a_batch():
    """With two workers, batches may overlap each other but never an explanation's job."""
    lock = threading.Lock()
    running = {"batches": 0, "overlaps": 0, "beside_job": 0}

    def slow_batch(items):
        with lock:
            running["batches"] += 1
            running["overlaps"] += running["batches"] > 1
        time.sleep(0.02)
        with lock:
            running["batches"] -= 1
        return items

    def job():
        with lock:
            running["beside_job"] += running["batches"]
        time.sleep(0.02)
        with lock:
            running["beside_job"] += running["batches"]
        return "done"

    batcher = MicroBatcher(slow_batch, max_batch=1, max_wait_s=0, max_queue=100, workers=2)

    async def main():
        batches = [batcher.submit([i]) for i in range(20)]
        jobs = [batcher.run_alone(job) for _ in range(5)]
        return await asyncio.gather(*batches, *jobs)

    try:
        results = asyncio.run(asyncio.wait_for(main(), TIMEOUT))
    finally:
        assert batcher.close(TIMEOUT)
    assert results == [[i] for i in range(20)] + ["done"] * 5
    assert running["beside_job"] == 0 and running["overlaps"] > 0


def test_the_page_and_its_assets_come_from_dfx(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert 'id="files"' in page.text and "http" not in page.text.replace("http-equiv", "")
    for asset, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        response = client.get(f"/static/{asset}")
        assert response.status_code == 200 and response.headers["content-type"].startswith(kind)
    assert_error(client.get("/static/missing.js"), 404)
    assert_error(client.get("/static/..%2Fapp.py"), 404)
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    assert "files" in body["multipart/form-data"]["schema"]["properties"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/openapi.json" in docs.text
    # Swagger UI comes from dfx itself (the serve extra's swagger-ui-bundle), never a CDN.
    assert "cdn." not in docs.text and "/docs-assets/swagger-ui-bundle.js" in docs.text
    script = client.get("/docs-assets/swagger-ui-bundle.js")
    assert script.status_code == 200 and len(script.content) > 100_000


def test_every_route_gets_the_security_headers(client):
    for path in ("/healthz", "/openapi.json", "/docs", "/v1/model", "/", "/v2/missing"):
        headers = client.get(path).headers
        assert headers["X-Content-Type-Options"] == "nosniff", path
        assert headers["Referrer-Policy"] == "no-referrer", path
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"], path
    assert (
        client.get("/openapi.json")
        .headers["Content-Security-Policy"]
        .startswith("default-src 'none'")
    )
    # Swagger UI's one inline script is allowed by its hash, nothing else inline.
    docs = client.get("/docs").headers["Content-Security-Policy"]
    script_src = next(d for d in docs.split(";") if d.strip().startswith("script-src"))
    assert "'sha256-" in script_src and "unsafe-inline" not in script_src


def test_redirects_are_relative_and_never_echo_the_host(client):
    response = client.get("/healthz/?x=1", headers={"Host": "evil.example"}, follow_redirects=False)
    assert response.status_code == 307
    assert response.headers["location"] == "/healthz?x=1"


def test_allowed_hosts_refuse_other_host_headers(detector, trained, good):
    settings = settings_for(trained, allowed_hosts=("testserver", "*.example.org"))
    with TestClient(create_app(detector, settings)) as guarded:
        wait_ready(guarded.get)
        assert guarded.get("/v1/model").status_code == 200
        assert guarded.get("/v1/model", headers={"Host": "api.example.org:8000"}).status_code == 200
        body = assert_error(guarded.get("/v1/model", headers={"Host": "evil.example"}), 400)
        assert "evil.example" in body["detail"]
        refused = guarded.get("/", headers={"Host": "example.org.evil"})
        assert refused.status_code == 400 and refused.headers["X-Content-Type-Options"]
        # Probes often name the address: the health checks answer whatever the Host.
        assert guarded.get("/healthz", headers={"Host": "10.0.0.7:8000"}).status_code == 200


def test_overlays_are_drawn_at_most_the_stated_size():
    import numpy as np

    from dfx.overlays import drawn_images

    image = Image.new("RGB", (3000, 1500), (40, 80, 120))
    heatmaps = {"dm": np.linspace(0, 1, 3000 * 1500, dtype=np.float32).reshape(1500, 3000)}
    pictures = drawn_images(image, heatmaps, {"dm": 1.0}, ["caption"], max_side=1024)
    assert pictures["dm"].size == (1024, 512)
    small = drawn_images(image.resize((300, 150)), {"dm": heatmaps["dm"][:150, :300]}, None,
                         ["caption"], max_side=1024)  # fmt: skip
    assert small["dm"].size == (300, 150)  # smaller images keep their size


def run_pool(workers: int, per_request: int, jobs):
    """``jobs(pool)`` (a coroutine) with a started WorkerPool; closed afterwards."""

    async def main():
        pool = WorkerPool(workers, per_request, memory_mb=0)
        await asyncio.get_running_loop().run_in_executor(None, pool.start)
        try:
            return await jobs(pool)
        finally:
            pool.close()

    return asyncio.run(asyncio.wait_for(main(), TIMEOUT))


def test_a_task_past_its_timeout_is_killed_and_the_worker_replaced():
    async def jobs(pool):
        started = time.monotonic()
        with pytest.raises(TaskTimeout):
            await pool.run(object(), 0.3, time.sleep, 20)
        assert time.monotonic() - started < 5  # killed, not waited for
        with pytest.raises(TaskFailed, match="ZeroDivisionError"):
            await pool.run(object(), 5, divmod, 1, 0)
        assert await pool.run(object(), 5, divmod, 7, 2) == (3, 1)
        return pool.replaced

    assert run_pool(1, 1, jobs) == 1


def touch_then_sleep(path: Path, seconds: float) -> str:
    """Code for ``exec`` in a worker: it creates ``path`` (so the test sees it start), then
    sleeps."""
    return f"import pathlib, time; pathlib.Path({str(path)!r}).touch(); time.sleep({seconds})"


async def until_exists(path: Path) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not path.exists():
        assert time.monotonic() < deadline, f"no {path.name} within {TIMEOUT} s"
        await asyncio.sleep(0.01)


def test_an_abandoned_task_is_killed_and_the_next_runs(tmp_path):
    async def jobs(pool):
        [before] = pool.pids()
        code = touch_then_sleep(tmp_path / "started", 20)
        abandoned = asyncio.ensure_future(pool.run(object(), 30, exec, code))
        await until_exists(tmp_path / "started")  # it runs in the worker
        abandoned.cancel()
        started = time.monotonic()
        assert await pool.run(object(), 5, divmod, 9, 4) == (2, 1)
        assert time.monotonic() - started < 10
        return before, pool.pids()

    before, after = run_pool(1, 1, jobs)
    assert after and after != [before]


def test_the_workers_are_shared_fairly_between_requests(tmp_path):
    """Round robin over the waiting requests: a request behind a big one is not last."""
    finished = []

    async def jobs(pool):
        async def one(owner, name):
            await pool.run(owner, 10, exec, touch_then_sleep(tmp_path / name, 0.2))
            finished.append(name)

        big, small = object(), object()
        first = [asyncio.ensure_future(one(big, f"big{i}")) for i in range(4)]
        # The first runs in the worker, so all four have been handed to the pool.
        await until_exists(tmp_path / "big0")
        await asyncio.gather(*first, one(small, "small"))

    run_pool(1, 1, jobs)
    assert finished.index("small") <= 2, finished


def test_connections_are_capped_below_the_open_file_limit():
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    derived = max_connections(ServeConfig(decode_workers=2))
    assert 8 <= derived < soft or soft == resource.RLIM_INFINITY
    assert max_connections(ServeConfig(max_connections=7)) == 7


# A real server: uvicorn on 127.0.0.1, a free port, stopped by the test.


@contextlib.contextmanager
def running(app):
    import uvicorn

    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen(128)  # connections wait in the backlog until uvicorn accepts them
    port = listening.getsockname()[1]
    # log_config None: uvicorn leaves logging alone (its handlers would outlive pytest's capture).
    settings = app.state.service.settings
    config = uvicorn_config(app, settings, "127.0.0.1", port, log_config=None)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listening]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + TIMEOUT
        while not server.started:  # a loaded machine may take a while to start the thread
            assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        with httpx.Client(base_url=url, timeout=TIMEOUT) as http:
            wait_ready(http.get)
        yield url
    finally:
        server.should_exit = True
        thread.join(TIMEOUT)
        listening.close()
        assert not thread.is_alive(), "the server did not stop"


@pytest.fixture(scope="module")
def server(detector, trained):
    with running(create_app(detector, settings_for(trained))) as url:
        yield url


def test_a_connection_that_sends_no_request_is_closed(detector, trained):
    settings = settings_for(trained, header_timeout_s=0.5)
    with running(create_app(detector, settings)) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as idle:
            idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and no end
            started = time.monotonic()
            assert idle.recv(100) == b""  # closed by the server
            assert time.monotonic() - started < TIMEOUT
        # A complete request on a fresh connection is answered as usual.
        assert httpx.get(url + "/healthz", timeout=TIMEOUT).status_code == 200


def test_a_body_that_does_not_arrive_in_time_is_408(detector, trained, good):
    content_type, body = multipart(good[0])
    with running(create_app(detector, settings_for(trained, request_timeout_s=1))) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as connection:
            started = time.monotonic()
            connection.sendall(
                f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}"
                f"\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body[: len(body) // 2]
            )  # and the rest never
            status, body = read_response(connection)
            assert time.monotonic() - started < TIMEOUT
        assert status == 408, body
        assert json.loads(body) == {"error": "request timeout",
                                    "detail": "the request did not arrive within 1 s."}  # fmt: skip
        assert httpx.get(url + "/healthz", timeout=TIMEOUT).status_code == 200


def test_concurrent_clients_get_exactly_their_records(server, good, bad, expected):
    clients, rounds = 12, 4
    plans = {  # one good image a request, and a bad one beside it in every third
        (c, r): [good[(c + r) % len(good)], *([bad[(c * r) % len(bad)]] * ((c + r) % 3 == 0))]
        for c in range(clients)
        for r in range(rounds)
    }
    answers: dict[tuple[int, int], list[dict]] = {}
    latencies: list[float] = []

    def client_session(c: int) -> None:
        with httpx.Client(base_url=server, timeout=TIMEOUT) as http:
            for r in range(rounds):
                started = time.perf_counter()
                response = http.post("/v1/predict", files=form(*plans[c, r]))
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text
                answers[c, r] = response.json()

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for done in [pool.submit(client_session, c) for c in range(clients)]:
            done.result(timeout=120)
    elapsed = time.perf_counter() - started
    assert answers.keys() == plans.keys()  # none lost
    for key, records in answers.items():
        assert [r["path"] for r in records] == [p.name for p in plans[key]]  # none doubled
        for record, path in zip(records, plans[key]):
            assert_same_up_to_rounding(record, expected[path.name], f"{key} {path.name}")
    with httpx.Client(base_url=server, timeout=TIMEOUT) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
    latencies.sort()
    print(
        f"\n{len(plans)} requests from {clients} clients in {elapsed:.2f} s: "
        f"{len(plans) / elapsed:.1f} requests/s, latency p50 "
        f"{1000 * statistics.median(latencies):.0f} ms, p99 "
        f"{1000 * latencies[int(0.99 * (len(latencies) - 1))]:.0f} ms"
    )


def chromium_paths() -> tuple[str, str]:
    browser = next(
        (found for name in ("chromium", "chromium-browser", "google-chrome")
         if (found := shutil.which(name))),
        None,
    )  # fmt: skip
    driver = shutil.which("chromedriver") or (
        "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None
    )
    if browser is None or driver is None:
        pytest.skip("needs chromium and chromedriver (apt-get install chromium chromium-driver)")
    return browser, driver


@contextlib.contextmanager
def headless_chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1200,1000"):  # fmt: skip
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(TIMEOUT)
    driver.set_script_timeout(TIMEOUT)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_page_in_headless_chromium(server, good, bad, expected):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    image, broken = good[2], bad[0]
    with headless_chromium() as driver:
        wait = WebDriverWait(driver, TIMEOUT)
        driver.get(server + "/")
        wait.until(lambda d: "fake when P(fake)" in d.find_element(By.ID, "model").text)
        driver.find_element(By.ID, "files").send_keys(f"{image}\n{broken}")

        def cards(d):
            found = {c.find_element(By.CSS_SELECTOR, ".name").text: c
                     for c in d.find_elements(By.CSS_SELECTOR, ".card")}  # fmt: skip
            verdicts = [c.find_element(By.CSS_SELECTOR, ".verdict").text for c in found.values()]
            return found if len(found) == 2 and "Classifying…" not in verdicts else False

        found = wait.until(cards)
        verdict = found[image.name].find_element(By.CSS_SELECTOR, ".verdict").text
        assert verdict.startswith("Fake" if expected[image.name]["fake"] else "Not fake")
        error = found[broken.name].find_element(By.CSS_SELECTOR, ".error")
        assert error.text == expected[broken.name]["error"]
        Select(driver.find_element(By.ID, "method")).select_by_value("gradcam-relative")
        toggle = found[image.name].find_element(By.CSS_SELECTOR, "button.explain")
        toggle.click()
        assert toggle.get_attribute("aria-expanded") == "true"
        overlays = (By.CSS_SELECTOR, ".overlays img")
        wait.until(lambda d: len(found[image.name].find_elements(*overlays)) == 4)
        status = (By.CSS_SELECTOR, ".explain-status")
        assert "(gradcam-relative)" in found[image.name].find_element(*status).text
        # Another method while the explanation is open: its maps replace the others.
        Select(driver.find_element(By.ID, "method")).select_by_value("gradcam")
        wait.until(lambda d: "(gradcam)" in found[image.name].find_element(*status).text)
        assert len(found[image.name].find_elements(*overlays)) == 4
        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert severe == []


# The command line.


def test_serve_help_shows_examples():
    page = invoke("serve", "--help")
    assert page.exit_code == 0
    assert "Examples" in page.stdout and "/v1/predict" in page.stdout


def test_without_the_extra_serve_says_what_to_install(trained, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else real(name, *a)
    )
    result = invoke("serve", "-M", trained["model"])
    assert_user_error(result, 'pip install "deepfeaturex[serve]"')


def test_a_bad_token_file_is_one_line(trained, tmp_path):
    assert_user_error(
        invoke("serve", "-M", trained["model"], "--token-file", tmp_path / "none"),
        "cannot read --token-file",
    )
    (tmp_path / "empty").write_text("\n")
    assert_user_error(
        invoke("serve", "-M", trained["model"], "--token-file", tmp_path / "empty"),
        "holds no token",
    )


def test_the_threshold_option_decides_every_request(trained, good, monkeypatch):
    import uvicorn

    apps = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: apps.append(self.config.app))
    monkeypatch.setattr(uvicorn.Config, "configure_logging", lambda self: None)
    for threshold in ("0", "1"):
        result = invoke("serve", "-M", trained["model"], "--device", "cpu", "--threshold",
                        threshold)  # fmt: skip
        assert result.exit_code == 0, result.output
    for app, threshold, fake in zip(apps, (0.0, 1.0), (True, False)):
        with TestClient(app) as served:
            wait_ready(served.get)
            assert served.get("/v1/model").json()["model"]["threshold"]["value"] == threshold
            records = served.post("/v1/predict", files=form(*good)).json()
            assert [r["fake"] for r in records if r["p_fake"] < 1] == [fake] * len(records)
            # A request's own threshold still overrides the service's.
            other = served.post(f"/v1/predict?threshold={1 - threshold}", files=form(*good))
            assert {r["fake"] for r in other.json() if r["p_fake"] < 1} == {not fake}


def test_a_bad_model_fails_before_the_port_opens(tmp_path):
    damaged = tmp_path / "model.pt"
    damaged.write_bytes(b"not a model file at all")
    for model in (damaged, tmp_path / "missing.pt"):
        done = subprocess.run([*DFX, "serve", "-M", str(model), "--port", "0"],
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("error:") == 1 and "Traceback" not in done.stderr
        assert str(model.name) in done.stderr
        # uvicorn logs these as it starts and binds; none was reached.
        assert "Started server process" not in done.stderr + done.stdout
        assert "Uvicorn running" not in done.stderr + done.stdout


def test_other_interfaces_without_a_token_get_a_warning(trained, tmp_path, monkeypatch):
    import uvicorn

    started = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: started.append(self.config.host))
    # Its logging handlers would write to this test's captured stderr after it has closed.
    monkeypatch.setattr(uvicorn.Config, "configure_logging", lambda self: None)
    (tmp_path / "token").write_text("s3cret\n")
    common = ("serve", "-M", trained["model"], "--device", "cpu", "--host")
    open_to_all = invoke(*common, "0.0.0.0")
    assert open_to_all.exit_code == 0, open_to_all.output
    assert "warning: listening on 0.0.0.0 without a token" in open_to_all.stderr
    guarded = invoke(*common, "0.0.0.0", "--token-file", tmp_path / "token")
    loopback = invoke(*common, "127.0.0.1")
    assert "warning" not in guarded.stderr + loopback.stderr
    assert started == ["0.0.0.0", "0.0.0.0", "127.0.0.1"]


def multipart(path: Path, boundary: str = "dfxboundary") -> tuple[str, bytes]:
    """The content type and body of a form upload of ``path`` in the field 'files'."""
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{path.name}"'
        "\r\nContent-Type: application/octet-stream\r\n\r\n"
    ).encode()
    body = head + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", body


def read_response(connection: socket.socket) -> tuple[int, bytes]:
    """The status and the body of the next final HTTP response on ``connection`` (a
    ``100 Continue`` before it is passed over); the body is read to its Content-Length."""
    received = b""
    while True:
        received = received.removeprefix(b"HTTP/1.1 100 Continue\r\n\r\n")
        head, found, body = received.partition(b"\r\n\r\n")
        if found:
            length = re.search(rb"(?im)^content-length: *(\d+)", head)
            if length and len(body) >= int(length[1]):
                return int(head.split(b" ", 2)[1]), body[: int(length[1])]
        chunk = connection.recv(65536)
        assert chunk, f"the connection closed before a whole response: {received[:300]!r}"
        received += chunk


def test_sigterm_lets_the_request_in_flight_finish(trained, good, expected, tmp_path):
    """The real command: a request whose body the service has begun to read when SIGTERM
    comes still gets its answer, and the process then ends."""
    with live_server(trained["model"], tmp_path / "serve.log") as server:
        content_type, body = multipart(good[0])
        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as connection:
            connection.sendall(
                f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            )
            # 100 Continue: the application has started to read this request's body.
            assert connection.recv(25) == b"HTTP/1.1 100 Continue\r\n\r\n"
            server.process.send_signal(signal.SIGTERM)
            connection.sendall(body)
            status, answer = read_response(connection)
        assert status == 200, answer
        assert_same_up_to_rounding(json.loads(answer), [expected[good[0].name]])
        # uvicorn re-raises the signal after a clean shutdown, so it may end by SIGTERM.
        assert server.process.wait(timeout=60) in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in server.output()
