"""Helpers the CLI tests share: Typer's runner, a tiny training run's options, the commands,
the installed dfx in a child process, and a live ``dfx serve``."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from dfx.cli import app
from dfx.data.manifest import make_manifest, write_manifest

runner = CliRunner()

TINY_RUN = [
    "--backbone",
    "tiny",
    "--weights",
    "none",
    "--image-size",
    "32",
    "--epochs",
    "1",
    "--device",
    "cpu",
    "--workers",
    "0",
]
"""Options of a one-epoch tiny training run on the 32-pixel synthetic set."""

COMMANDS = [
    "demo",
    "split",
    "train-base",
    "train-fusion",
    "train-baseline",
    "evaluate",
    "jpeg-robustness",
    "robustness",
    "predict",
    "explain",
    "export",
    "import-official",
    "card",
    "serve",
    "backbones",
]


SKIP_WITHOUT_OPENVINO = "OpenVINO is not installed"
"""The skip reason of the OpenVINO tests: the test extra leaves OpenVINO out (docs/testing.md)."""
SKIP_AS_ROOT = "running as root, whom file permissions do not stop"
"""The skip reason of a test that needs a permission to be refused."""
DECLARED_SKIPS = (SKIP_WITHOUT_OPENVINO, SKIP_AS_ROOT)
"""The only skips allowed under ``DFX_REQUIRE_INSTALLED=1`` (CI): a skip whose reason starts
otherwise fails the run there (tests/conftest.py)."""


DFX = (sys.executable, "-m", "dfx")
"""The installed dfx in a child process: the wheel in CI, the editable install in development.
No test puts src/ on PYTHONPATH (tests/test_packaging.py holds every test file to that)."""

SERVING = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")
"""The line of ``dfx serve``'s log that gives the port it bound (``--port 0``)."""


@dataclass
class LiveServer:
    """A ``dfx serve`` child process, its address and its log (stdout and stderr)."""

    process: subprocess.Popen
    url: str
    log: Path

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def live_server(model, log: Path, *options, env=None, preexec_fn=None, start_s: float = 120):
    """The installed ``dfx serve -M MODEL OPTIONS`` on 127.0.0.1, once /readyz says 200.

    The server binds port 0 itself and the port is read from its log, so no other process
    can take it in between. Stopped on exit (SIGTERM, then SIGKILL after 60 s).
    """
    import httpx

    command = [*DFX, "serve", "-M", str(model), "--device", "cpu", "--host", "127.0.0.1",
               "--port", "0", *map(str, options)]  # fmt: skip
    with open(log, "wb") as output:
        process = subprocess.Popen(
            command, env=env, stdout=output, stderr=subprocess.STDOUT, preexec_fn=preexec_fn
        )
    try:
        deadline, url = time.monotonic() + start_s, None
        while True:
            text = log.read_text(errors="replace")
            assert process.poll() is None, f"dfx serve ended ({process.returncode}):\n{text}"
            assert time.monotonic() < deadline, f"dfx serve was not ready:\n{text}"
            if url is None and (found := SERVING.search(text)):
                url = f"http://127.0.0.1:{found[1]}"
            if url is not None:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                        break
            time.sleep(0.1)
        yield LiveServer(process, url, log)
    finally:
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


def invoke(*args: str, input: str | None = None, env: dict | None = None):
    return runner.invoke(app, [str(a) for a in args], input=input, env=env)


def evaluate_test_split(trained: dict, *options):
    """``dfx evaluate`` of the trained detector on its manifest's test split."""
    return invoke("evaluate", "--model", trained["model"], "-m", trained["manifest"], *options)


def assert_user_error(result, *fragments: str) -> None:
    """Exit code 2, one sentence on stderr, no traceback."""
    assert result.exit_code == 2, result.output
    # Progress lines (stderr is no terminal here) may come first; the error ends it.
    message = result.stderr[result.stderr.find("error:") :].strip()
    assert "error:" in result.stderr and message.count("error:") == 1
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in " ".join(message.split())


def private_copy(manifest: Path, tmp_path: Path) -> Path:
    """A copy of the data folder and its manifest under ``tmp_path``; returns the manifest."""
    data = shutil.copytree(manifest.parent / "data", tmp_path / "data")
    return write_manifest(make_manifest(data), tmp_path / "manifest.csv")
