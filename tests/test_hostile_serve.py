"""Hostile inputs against a live ``dfx serve`` (docs/reliability.md, "The service under attack").

One real server (the installed ``dfx serve``) on 127.0.0.1, on the port it binds, with 256 file
descriptors, runs the whole series. Each attack asserts its answer (a 4xx or an error
record, or a bounded answer), a time bound, the memory of the server and its workers, and
that /healthz keeps answering in under a second while it runs (polled from a thread). Every
input is built here; every loop is bounded; the server is stopped by the fixture.
"""

from __future__ import annotations

import base64
import contextlib
import io
import resource
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image, PngImagePlugin

from dfx.overlays import PANEL_SIDE
from dfx.serve.app import OVERLAY_SIDE
from tests.helpers import LiveServer, live_server

ANSWER_S = 10.0
"""Longest any hostile request may take to be answered."""
HEALTH_S = 1.0
"""Longest /healthz may take while an attack runs."""
EXTRA_MB = 500
"""Most memory (MiB) the server and its workers may add during one attack."""
OPEN_FILES = 256
"""The server's file-descriptor limit (RLIMIT_NOFILE): connections are capped below it."""
HEADER_TIMEOUT_S = 2.0
DECODE_TIMEOUT_S = 6.0
LEFT = "the client left"
"""What the server logs, once, for a client that leaves before its answer."""


def tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its child processes (the workers), in MiB."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                pending.extend(int(child) for child in children)
    return total / 1024


def rss(server: LiveServer) -> float:
    return tree_rss_mb(server.process.pid)


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory):
    if not Path("/proc/self/status").exists():
        pytest.skip("measures memory through /proc (Linux)")
    log = tmp_path_factory.mktemp("hostile") / "server.log"

    def limit_files() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, OPEN_FILES))

    options = ["--decode-workers", "2", "--header-timeout", HEADER_TIMEOUT_S,
               "--decode-timeout", DECODE_TIMEOUT_S]  # fmt: skip
    with live_server(trained["model"], log, *options, preexec_fn=limit_files) as running:
        # One ordinary request first, so the start measures a server that has served.
        ordinary = httpx.post(running.url + "/v1/predict", files=[png_file("ok.png")], timeout=30)
        assert ordinary.status_code == 200
        running.start_rss = rss(running)
        yield running


class Watch:
    """Polls /healthz and samples memory from a thread while an attack runs."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.latencies: list[float] = []
        self.peak_rss = 0.0
        self._stop = threading.Event()
        self._polled = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        with httpx.Client(base_url=self.server.url, timeout=5.0) as client:
            for _ in range(2000):  # bounded: 2000 × ≥ 0.05 s outlasts any attack here
                if self._stop.is_set():
                    return
                started = time.perf_counter()
                try:
                    ok = client.get("/healthz").status_code == 200
                except httpx.HTTPError:
                    ok = False
                latency = time.perf_counter() - started
                self.latencies.append(latency if ok else float("inf"))
                self._polled.set()
                self.peak_rss = max(self.peak_rss, rss(self.server))
                self._stop.wait(0.05)

    def __enter__(self) -> Watch:
        self.before = rss(self.server)
        self._thread.start()
        # The attack starts once the poller runs (a fast attack would otherwise go unwatched).
        assert self._polled.wait(ANSWER_S), "/healthz did not answer before the attack"
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)
        self.peak_rss = max(self.peak_rss, rss(self.server))
        if exc[0] is not None:
            return
        assert self.latencies, "/healthz was never polled"
        worst = max(self.latencies)
        assert worst < HEALTH_S, f"/healthz took {worst:.2f} s (polled {len(self.latencies)}×)"
        grown = self.peak_rss - self.before
        assert grown <= EXTRA_MB, f"server memory grew by {grown:.0f} MiB"


def png_bytes(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **options)
    return buffer.getvalue()


def png_file(name: str, data: bytes | None = None):
    data = data if data is not None else png_bytes(Image.new("RGB", (32, 32), (90, 120, 30)))
    return ("files", (name, data, "application/octet-stream"))


def timed_post(server: LiveServer, path: str, files, **params) -> httpx.Response:
    started = time.perf_counter()
    response = httpx.post(server.url + path, files=files, params=params, timeout=60)
    elapsed = time.perf_counter() - started
    assert elapsed <= ANSWER_S, f"answered after {elapsed:.1f} s"
    return response


# The attacks.


def test_a_provenance_regex_bomb_freezes_nothing(server):
    """XMP with 'DigitalSourceType' 30,000 times and no '>' (quadratic in the old pattern)."""
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", "<x:xmpmeta " + "DigitalSourceType " * 30_000)
    bomb = png_bytes(Image.new("RGB", (32, 32)), pnginfo=info)
    with Watch(server):
        response = timed_post(server, "/v1/predict", [png_file("xmp.png", bomb)])
    assert response.status_code == 200, response.text
    [record] = response.json()
    # Killed at the decode timeout (an error record), or read by a linear scan (a verdict).
    assert record["path"] == "xmp.png" and (record["error"] or record["label"])


def test_thin_one_bit_images_in_one_request(server):
    """12 one-bit PNGs of 100 × 894,784 pixels (12 KB each, 268 MB each as RGB)."""
    thin = png_bytes(Image.new("1", (100, 894_784)))
    files = [png_file(f"thin{i}.png", thin) for i in range(12)]
    with Watch(server):
        response = timed_post(server, "/v1/predict", files)
    assert response.status_code == 200, response.text
    records = response.json()
    assert [r["path"] for r in records] == [f"thin{i}.png" for i in range(12)]
    assert all(r["error"] for r in records), records  # refused (aspect ratio, decoded size)


def test_explain_of_a_large_zero_png_is_bounded(server):
    """An all-zero 9459 × 9459 RGB PNG (about 260 KB) to /v1/explain."""
    zeros = png_bytes(Image.new("RGB", (9459, 9459)))
    with Watch(server):
        response = timed_post(server, "/v1/explain", [png_file("zeros.png", zeros)])
    if response.status_code == 422:  # a machine too busy to decode it within the timeout
        assert "took longer than" in response.json()["detail"], response.text
        return
    assert response.status_code == 200, response.text
    record = response.json()
    assert record["size"] == [9459, 9459]
    for key, encoded in record["images"].items():
        picture = Image.open(io.BytesIO(base64.b64decode(encoded)))
        # Overlays are capped; the sheet is four fixed-size panels, whatever the image.
        bound = 5 * PANEL_SIDE if key == "sheet" else OVERLAY_SIDE
        assert max(picture.size) <= bound, (key, picture.size)


def test_a_bad_explain_target_is_400(server):
    response = timed_post(server, "/v1/explain", [png_file("ok.png")], target="fake")
    assert response.status_code == 400 and "`target`" in response.json()["detail"]


def test_idle_sockets_are_closed_and_health_answers(server):
    """50 connections that send nothing, and 50 that stop halfway through their headers."""
    with Watch(server), contextlib.ExitStack() as stack:
        sockets = []
        for index in range(100):
            client = stack.enter_context(socket.create_connection(("127.0.0.1", server.port)))
            if index % 2:
                client.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            sockets.append(client)
        # The server closes each after the head timeout: every socket reads end-of-file.
        deadline = time.monotonic() + HEADER_TIMEOUT_S + ANSWER_S
        for client in sockets:
            client.settimeout(max(0.1, deadline - time.monotonic()))
            assert client.recv(1024) == b"", "an idle connection was left open"


def test_connections_past_the_file_limit_get_503_and_no_log_flood(server):
    """More connections than the descriptors allow: refused with 503, one log line at most."""
    import selectors

    answers: dict[socket.socket, bytes] = {}
    with contextlib.ExitStack() as stack, selectors.DefaultSelector() as selector:
        for _ in range(OPEN_FILES + 50):
            client = socket.create_connection(("127.0.0.1", server.port), timeout=ANSWER_S)
            stack.callback(client.close)
            selector.register(client, selectors.EVENT_READ)
        # Those past the cap get a 503 and are closed at once; the others at the head timeout.
        deadline = time.monotonic() + HEADER_TIMEOUT_S + ANSWER_S
        while len(answers) < OPEN_FILES + 50 and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.5):
                answers[key.fileobj] = key.fileobj.recv(256)
                selector.unregister(key.fileobj)
    assert len(answers) == OPEN_FILES + 50, "a connection was left open"
    refused = sum(answer.startswith(b"HTTP/1.1 503") for answer in answers.values())
    assert 0 < refused < OPEN_FILES + 50
    assert httpx.get(server.url + "/healthz", timeout=HEALTH_S).status_code == 200
    log = server.log.read_text(errors="replace")
    assert log.count("Too many open files") <= 1 and log.count("out of system resource") <= 1


def test_a_client_leaving_mid_upload_or_before_its_answer_logs_one_line(server):
    zeros = png_bytes(Image.new("RGB", (9459, 9459)))
    boundary = "dfxboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="z.png"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    body = head + zeros + f"\r\n--{boundary}--\r\n".encode()
    before = server.log.read_text(errors="replace").count(LEFT)
    with Watch(server):
        # predict: a third of the body, then gone; explain: all of it, then gone.
        for path, sent in (("/v1/predict", len(body) // 3), ("/v1/explain", len(body))):
            with socket.create_connection(("127.0.0.1", server.port), timeout=ANSWER_S) as client:
                client.sendall(
                    f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
                    f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n".encode()
                    + body[:sent]
                )
        deadline = time.monotonic() + ANSWER_S
        while server.log.read_text(errors="replace").count(LEFT) < before + 2:
            assert time.monotonic() < deadline, "the server did not notice the clients leave"
            time.sleep(0.1)
    assert "Traceback" not in server.log.read_text(errors="replace")


def test_an_eps_upload_is_refused(server):
    eps = (
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n"
        b"newpath 0 0 moveto 16 16 lineto stroke showpage\n%%EOF\n"
    )
    with Watch(server):
        response = timed_post(server, "/v1/predict", [png_file("drawing.eps", eps)])
    assert response.status_code == 200, response.text
    [record] = response.json()
    assert record["error"], record
    # No command line or temporary path in what the client sees.
    assert "/tmp" not in record["error"] and "-dSAFER" not in record["error"]
    assert record["error"].startswith("EPS images are not accepted"), record
    explained = timed_post(server, "/v1/explain", [png_file("drawing.eps", eps)])
    assert explained.status_code == 415, explained.text


def test_zz_memory_returns_after_the_series(server):
    """Runs last (file order): the server and its workers are back near their start."""
    deadline = time.monotonic() + 30
    while rss(server) > 1.2 * server.start_rss and time.monotonic() < deadline:
        time.sleep(0.5)
    now = rss(server)
    assert now <= 1.2 * server.start_rss, f"{now:.0f} MiB after, {server.start_rss:.0f} before"
    assert "Traceback" not in server.log.read_text(errors="replace")
