"""dfx serve: the detector behind an HTTP API and a web page (FastAPI and uvicorn)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from dfx.cli.console import stderr
from dfx.cli.errors import handle_errors
from dfx.cli.model_reference import check_model, fetch_model
from dfx.cli.options import (
    BackendOption,
    Device,
    MaxPixels,
    ModelOption,
    Precision,
    Sha256Option,
    ThresholdOption,
    config_from,
)
from dfx.extras import install_command, require
from dfx.limits import DEFAULT_MAX_PIXELS
from dfx.serve.config import ServeConfig

EPILOG = """\
[bold]Examples[/bold]

  dfx serve --model model.pt                        # http://127.0.0.1:8000/ (page), /docs (API)
  curl -F files=@photo.jpg -F files=@other.png http://127.0.0.1:8000/v1/predict
  dfx serve -M model.pt --host 0.0.0.0 --token-file /etc/dfx/token --max-batch 32

POST /v1/predict takes images in the multipart field 'files' and answers the records of
'dfx predict --json'; POST /v1/explain takes one image and adds the overlays as PNG.
GET /healthz, /readyz and /v1/model tell whether it is alive, ready, and what it runs.
It listens on the loopback interface unless --host says otherwise; a service others can
reach should ask for a token (--token-file) and sit behind a reverse proxy (docs/serve.md).
Needs the serve extra: {hint}.
""".format(hint=escape(install_command("serve")))

_DEFAULTS = ServeConfig()


def _count(flag: str, help: str, **extra):
    """An option counting something, at least 1."""
    return typer.Option(flag, min=1, help=help, **extra)


def _seconds(flag: str, help: str, least: float = 0.001):
    """An option giving seconds."""
    return typer.Option(flag, min=least, metavar="S", help=help)


@handle_errors
def serve_command(
    model: ModelOption,
    sha256: Sha256Option = None,
    host: Annotated[
        str, typer.Option("--host", help="Interface to listen on (0.0.0.0: every interface).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port.")] = 8000,
    backend: BackendOption = "auto",
    device: Device = "auto",
    precision: Precision = "auto",
    threshold: ThresholdOption = None,
    max_batch: Annotated[
        int,
        typer.Option("--max-batch", min=1, help="Most images classified in one forward pass."),
    ] = _DEFAULTS.max_batch,
    max_wait_ms: Annotated[
        float,
        typer.Option(
            "--max-wait-ms", min=0.0, help="Longest an image waits for others to join its batch."
        ),
    ] = _DEFAULTS.max_wait_ms,
    max_upload_mb: Annotated[
        float,
        typer.Option(
            "--max-upload-mb", min=0.001, help="Largest request body in MiB (413 beyond)."
        ),
    ] = _DEFAULTS.max_upload_mb,
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            metavar="FILE",
            help="Require 'Authorization: Bearer <token>' on /v1, the token read from FILE.",
        ),
    ] = None,
    workers_per_model: Annotated[
        int,
        typer.Option(
            "--workers-per-model",
            min=1,
            help="Inference threads sharing the model (more overlap decoding and batches).",
        ),
    ] = _DEFAULTS.workers_per_model,
    max_queue: Annotated[int, _count("--max-queue", "Most images waiting (503 beyond).")] = (
        _DEFAULTS.max_queue
    ),
    max_files: Annotated[int, _count("--max-files", "Most images in one request (413 beyond).")] = (
        _DEFAULTS.max_files
    ),
    max_uploads: Annotated[
        int, _count("--max-uploads", "Most request bodies read at once (503 beyond).")
    ] = _DEFAULTS.max_uploads,
    request_timeout_s: Annotated[
        float,
        _seconds(
            "--request-timeout",
            "Longest a body may take to arrive, and a request to get its result (408/504).",
        ),
    ] = _DEFAULTS.request_timeout_s,
    decode_timeout_s: Annotated[
        float,
        _seconds("--decode-timeout", "Longest one image may take to decode (then it is killed)."),
    ] = _DEFAULTS.decode_timeout_s,
    decode_workers: Annotated[
        int | None,
        _count(
            "--decode-workers",
            "Processes that decode uploads and draw overlays (default: one per core, at most 4).",
        ),
    ] = None,
    decode_per_request: Annotated[
        int | None,
        _count("--decode-per-request", "Most workers one request holds (default: half)."),
    ] = None,
    decode_memory_mb: Annotated[
        float,
        typer.Option(
            "--decode-memory-mb",
            min=0.0,
            help="Memory a worker may add to its idle size, in MiB (0: no cap).",
        ),
    ] = _DEFAULTS.decode_memory_mb,
    allowed_hosts: Annotated[
        str | None,
        typer.Option(
            "--allowed-hosts",
            metavar="HOSTS",
            help="Comma-separated Host names served (*.example.com: subdomains); others get 400.",
        ),
    ] = None,
    max_connections: Annotated[
        int | None,
        _count("--max-connections", "Most open connections, 503 beyond (default: from ulimit -n)."),
    ] = None,
    limit_concurrency: Annotated[
        int | None,
        _count("--limit-concurrency", "uvicorn's cap on connections and requests (503 beyond)."),
    ] = None,
    timeout_keep_alive: Annotated[
        int, _seconds("--keep-alive-timeout", "Seconds an idle connection stays open.", least=1)
    ] = _DEFAULTS.timeout_keep_alive,
    header_timeout_s: Annotated[
        float, _seconds("--header-timeout", "Longest a client may take to send its headers.")
    ] = _DEFAULTS.header_timeout_s,
    max_header_bytes: Annotated[
        int, _count("--max-header-bytes", "Largest request line plus headers (400 beyond).")
    ] = _DEFAULTS.max_header_bytes,
    backlog: Annotated[
        int, _count("--backlog", "Connections the kernel holds before they are accepted.")
    ] = _DEFAULTS.backlog,
) -> None:
    """Serve the detector over HTTP: a JSON API and a drag-and-drop web page."""
    options = dict(locals())  # the option values, before any other name is bound
    require("serve")
    token = read_token(token_file) if token_file is not None else None
    check_model(model, sha256)
    hosts = parse_hosts(allowed_hosts) if allowed_hosts is not None else None
    settings = config_from(ServeConfig, options | {"token": token, "allowed_hosts": hosts})

    from dfx.api import load_detector
    from dfx.fingerprint import file_sha256
    from dfx.serve import create_app
    from dfx.serve.server import serve

    local = fetch_model(model, sha256)
    detector = load_detector(local, device, precision, runtime=backend)
    settings.model_name = Path(local).name
    settings.model_sha256 = file_sha256(local)
    console = stderr()
    if token is None and not is_loopback(host):
        console.print(
            f"warning: listening on {host} without a token: anyone who can reach this port "
            "can use the model; pass --token-file FILE.",
            markup=False,
            highlight=False,
        )
    serve(create_app(detector, settings), settings, host, port)


def parse_hosts(text: str) -> tuple[str, ...]:
    """The host names of ``--allowed-hosts`` (comma-separated); DfxError if there is none."""
    from dfx.errors import DfxError

    hosts = tuple(name.strip() for name in text.split(",") if name.strip())
    if not hosts:
        raise DfxError("--allowed-hosts names no host; give e.g. dfx.example.com,localhost.")
    return hosts


def read_token(path: Path) -> str:
    """The token in ``path`` (surrounding white space removed); DfxError if there is none."""
    from dfx.errors import DfxError

    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise DfxError(f"cannot read --token-file {path}: {reason}.") from None
    if not token:
        raise DfxError(f"--token-file {path} holds no token.")
    return token


def is_loopback(host: str) -> bool:
    """Whether ``host`` is only reachable from this machine."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
