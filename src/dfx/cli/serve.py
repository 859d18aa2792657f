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
    Device,
    InferenceRuntime,
    MaxPixels,
    ModelOption,
    Precision,
    Sha256Option,
    ThresholdOption,
    config_from,
)
from dfx.extras import install_command, require
from dfx.limits import DEFAULT_MAX_PIXELS
from dfx.serve.config import ServeSettings

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

_DEFAULTS = ServeSettings()


@handle_errors
def serve_command(
    model: ModelOption,
    sha256: Sha256Option = None,
    host: Annotated[
        str, typer.Option("--host", help="Interface to listen on (0.0.0.0: every interface).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port.")] = 8000,
    runtime: InferenceRuntime = "auto",
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
) -> None:
    """Serve the detector over HTTP: a JSON API and a drag-and-drop web page."""
    options = dict(locals())  # the option values, before any other name is bound
    require("serve")
    token = read_token(token_file) if token_file is not None else None
    check_model(model, sha256)
    settings = config_from(ServeSettings, options | {"token": token})

    import uvicorn

    from dfx.api import load_detector
    from dfx.fingerprint import file_sha256
    from dfx.serve import create_app

    local = fetch_model(model, sha256)
    detector = load_detector(local, device, precision, runtime=runtime)
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
    config = uvicorn.Config(
        create_app(detector, settings),
        host=host,
        port=port,
        timeout_graceful_shutdown=int(settings.request_timeout_s),
        server_header=False,
        log_level="info",
    )
    uvicorn.Server(config).run()


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
