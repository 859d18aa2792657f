"""The FastAPI application of ``dfx serve``: the versioned API, health checks and the page.

Every error is JSON ``{"error": ..., "detail": ...}`` with its HTTP status; bad input is
never a 500. Uploads stay in memory, no request path touches the file system, and the
page's assets are read from package data once, when the application is made.

The event loop parses requests and hands work on: decoding, the provenance scan and the
drawing of overlays run in worker processes (:mod:`dfx.serve.pool`), where a runaway is
killed at its timeout, and the network runs on the batcher's threads. A request whose client
has gone is cancelled, and so is the work it still has in the workers or the queue.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import importlib.resources
import logging
import re
from contextlib import asynccontextmanager
from dataclasses import replace

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from dfx._version import __version__
from dfx.data.decoding import HEIF_HINT, NOT_ACCEPTED, NOT_DECODABLE, ImageBytes
from dfx.data.discovery import NOT_AN_IMAGE
from dfx.errors import DfxError
from dfx.extras import MissingExtra
from dfx.report import to_json
from dfx.serve.batcher import MicroBatcher, QueueFull, ShuttingDown
from dfx.serve.config import ServeConfig
from dfx.serve.guard import Guard
from dfx.serve.pool import TaskFailed, TaskTimeout, WorkerPool
from dfx.serve.tasks import Decoded, decode_upload, draw_explanation
from dfx.serve.uploads import FIELD, UploadError, read_uploads

REQUIRES_EXTRA = "serve"
"""FastAPI and starlette are imported above: import this module after ``require('serve')``."""

API = "/v1"

NOT_READY_RETRY_S = 2
"""Retry-After of a 503 while the model loads or warms up."""

CLIENT_LEFT = "the client left"
"""How the log starts its one line about a client gone before its answer."""

_log = logging.getLogger("uvicorn.error")  # the server's log, as uvicorn configures it

OVERLAY_SIDE = 1024
"""Longer side, in pixels, of the overlays /v1/explain draws (larger images are scaled down)."""

UNSUPPORTED_REASONS = (NOT_AN_IMAGE, NOT_DECODABLE, HEIF_HINT)
"""Decoding failures that mean "not an image we read" (415); the others (truncated, too many
pixels, empty) are an image we cannot use (422)."""

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

_PAGE_HEADERS = {
    # Everything the page needs comes from dfx itself; thumbnails are blob: URLs of the
    # user's own files, overlays data: URLs of the API's PNGs.
    # (The other security headers come from dfx.serve.guard, on every route.)
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
}

_MULTIPART_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FIELD],
                    "properties": {
                        FIELD: {"type": "array", "items": {"type": "string", "format": "binary"}}
                    },
                }
            }
        },
    }
}


class ApiError(Exception):
    """An error response: status, short error, detail and extra headers."""

    def __init__(
        self, status: int, error: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail, self.headers = status, error, detail, headers


def json_response(data, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """Strict JSON (NaN as null), as the command line writes it."""
    return Response(to_json(data, indent=None), status, headers, media_type="application/json")


def error_response(status: int, error: str, detail, headers=None) -> Response:
    return json_response({"error": error, "detail": detail}, status, headers)


class Service:
    """The state behind the routes: the detector once loaded, the batcher, the decoders."""

    def __init__(self, detector, settings: ServeConfig) -> None:
        self.settings = settings
        self.detector = None if callable(detector) else detector
        self._load = detector if callable(detector) else None
        self.ready = False
        self.stopping = False
        """Shutdown has begun: new requests get 503 while the ones in flight finish."""
        self.failure: str | None = None
        """Why the model could not be loaded or warmed up (then /readyz stays 503)."""
        self.batcher: MicroBatcher | None = None
        self.pool = WorkerPool(settings.workers, settings.per_request, settings.decode_memory_mb)
        self.decode_size: int | None = None
        """The side predict shrinks decoded images towards (the network's resize)."""
        self.uploading = 0
        """Request bodies being read now (at most ``settings.max_uploads``)."""
        self.threshold = None
        """The service's :class:`dfx.threshold.Threshold`, resolved once at start."""

    def start(self) -> None:
        """Start the workers, load (when given a loader) and warm up the detector; then it is
        ready."""
        try:
            self.pool.start()
            if self.detector is None:
                self.detector = self._load()
            self.decode_size = self.detector.decode_size
            self.threshold = self.detector.resolve_threshold(self.settings.threshold)
            self.batcher = MicroBatcher(
                self._predict_batch,
                max_batch=self.settings.max_batch,
                max_wait_s=self.settings.max_wait_ms / 1000.0,
                max_queue=self.settings.max_queue,
                workers=self.settings.workers_per_model,
            )
            self._warm_up()
            self.ready = True
        except Exception as error:  # reported by /readyz; the process stays up for /healthz
            self.failure = f"{type(error).__name__}: {error}"

    def _warm_up(self) -> None:
        from PIL import Image

        side = self.detector.preprocessing.input_size
        blank = Image.new("RGB", (side, side))
        self._predict_batch([blank])
        # Explanations too, when they can run: their first call imports captum (seconds of
        # loading libraries, which holds the interpreter) and would stall every request.
        with contextlib.suppress(Exception):  # not installed, or a model without gradients
            self.detector.explain([blank], workers=0, max_pixels=None)

    def stop(self, timeout: float) -> None:
        """Finish the queued work (requests still wait for it), then end the threads."""
        if self.batcher is not None:
            self.batcher.close(timeout)
        self.pool.close()

    def _predict_batch(self, images: list) -> list:
        # Decoded already: the images go through as they are, in one step, in this thread.
        return self.detector.predict(
            images,
            batch_size=len(images),
            workers=0,
            threshold=self.threshold,
            max_pixels=None,
        )

    def check_ready(self) -> None:
        if self.stopping:
            detail = "the service is shutting down; send the request to another replica."
            raise ApiError(503, "shutting down", detail, {"Retry-After": str(NOT_READY_RETRY_S)})
        if not self.ready:
            detail = self.failure or "the model is loading or warming up."
            raise ApiError(503, "not ready", detail, {"Retry-After": str(NOT_READY_RETRY_S)})

    def authorize(self, request: Request) -> None:
        token = self.settings.token
        if token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        # Compared in constant time, so the answer's timing does not spell out the token.
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            raise ApiError(
                401,
                "unauthorized",
                "send the token: Authorization: Bearer <token>.",
                {"WWW-Authenticate": 'Bearer realm="dfx"'},
            )

    async def uploads(self, request: Request) -> list[ImageBytes]:
        if self.uploading >= self.settings.max_uploads:
            detail = f"{self.uploading} uploads are arriving already; retry shortly."
            raise ApiError(503, "busy", detail, {"Retry-After": "1"})
        self.uploading += 1
        try:
            files = await asyncio.wait_for(
                read_uploads(request, self.settings.max_upload_bytes, self.settings.max_files),
                self.settings.request_timeout_s,
            )
        except UploadError as error:
            raise ApiError(error.status, error.error, error.detail) from None
        except ClientDisconnect:  # nobody reads an answer: one line in the log, no traceback
            _log.info("%s midway through the upload.", CLIENT_LEFT)
            raise ApiError(400, "client disconnected", "the upload stopped midway.") from None
        except asyncio.TimeoutError:
            detail = f"the request did not arrive within {self.settings.request_timeout_s:g} s."
            raise ApiError(408, "request timeout", detail) from None
        finally:
            self.uploading -= 1
        if not files:
            raise ApiError(400, "no image", f"send one or more images in the form field '{FIELD}'.")
        return files

    async def decode(self, upload: ImageBytes, owner: object) -> Decoded | str:
        """An upload decoded in a worker as predict decodes files (in ``owner``'s share of
        the workers), or the reason it is not."""
        timeout = self.settings.decode_timeout_s
        try:
            return await self.pool.run(
                owner, timeout, decode_upload, upload, self.settings.max_pixels, self.decode_size
            )
        except TaskTimeout:
            return f"decoding took longer than {timeout:g} s"
        except TaskFailed as error:
            return f"cannot decode it ({error})"

    async def queued(self, call):
        """Await batcher work under the request timeout; busy and shutdown become 503s."""
        try:
            return await asyncio.wait_for(call, self.settings.request_timeout_s)
        except QueueFull as full:
            raise ApiError(503, "busy", str(full), {"Retry-After": str(full.retry_after)}) from None
        except ShuttingDown as stopping:
            raise ApiError(
                503, "shutting down", str(stopping), {"Retry-After": str(NOT_READY_RETRY_S)}
            ) from None
        except asyncio.TimeoutError:
            detail = f"no result within {self.settings.request_timeout_s:g} s."
            raise ApiError(504, "timeout", detail) from None

    async def predict(self, uploads: list[ImageBytes], threshold: float | None) -> list[dict]:
        owner = object()  # this request, for the workers' fair share
        self.batcher.announce(len(uploads))
        try:
            decoded = await asyncio.gather(*(self.decode(upload, owner) for upload in uploads))
        finally:
            self.batcher.withdraw(len(uploads))
        usable = [d for d in decoded if not isinstance(d, str)]
        predictions = iter(await self.queued(self.batcher.submit([d.image for d in usable])))
        records = []
        for upload, outcome in zip(uploads, decoded):
            if isinstance(outcome, str):
                records.append({"path": upload.name, "error": outcome})
                continue
            prediction = replace(next(predictions), path=upload.name, provenance=outcome.provenance)
            if threshold is not None:  # the batch was decided at the service's threshold
                prediction = prediction.at_threshold(threshold)
            records.append(prediction.to_dict())
        return records

    async def explain(
        self, upload: ImageBytes, target: str = "predicted", method: str = "gradcam"
    ) -> dict:
        """The explain record of one upload with its pictures, or 504 past the request
        timeout (the work still under way is then cancelled)."""
        try:
            self.detector.check_explain(target, method)
        except MissingExtra as missing:
            raise ApiError(501, "not installed", str(missing)) from None
        except DfxError as error:
            raise ApiError(400, "bad option", str(error)) from None
        timeout = self.settings.request_timeout_s
        try:
            return await asyncio.wait_for(self._explain(upload, target, method), timeout)
        except asyncio.TimeoutError:
            raise ApiError(504, "timeout", f"no result within {timeout:g} s.") from None

    async def _explain(self, upload: ImageBytes, target: str, method: str) -> dict:
        owner = object()
        outcome = await self.decode(upload, owner)
        if isinstance(outcome, str):
            unsupported = outcome.startswith(UNSUPPORTED_REASONS) or NOT_ACCEPTED in outcome
            status = 415 if unsupported else 422
            raise ApiError(status, "unreadable image", f"{upload.name}: {outcome}")
        threshold = self.threshold

        def job():
            # The decoded image: the network sees what predict gives it, and the heatmaps
            # have the decoded size (bounded), not the upload's.
            [explanation] = self.detector.explain(
                [outcome.image],
                target=target,
                method=method,
                threshold=threshold,
                max_pixels=None,
                workers=0,
            )
            return explanation

        explanation = await self.queued(self.batcher.run_alone(job))
        if explanation.error is not None:
            raise ApiError(422, "unreadable image", f"{upload.name}: {explanation.error}")
        # The file's provenance, read with its decoding, as /v1/predict and dfx explain give it.
        prediction = replace(
            explanation.prediction, path=upload.name, provenance=outcome.provenance
        )
        explanation = replace(
            explanation, path=upload.name, prediction=prediction, size=outcome.size
        )
        pictures = await self._draw(owner, outcome, explanation, threshold.value)
        return {**explanation.to_dict(), "threshold": threshold.value, "images": pictures}

    async def _draw(self, owner, outcome: Decoded, explanation, threshold: float) -> dict:
        """The overlays and the sheet as base64 PNG, drawn in a worker (see OVERLAY_SIDE)."""
        from dfx.overlays import caption_lines

        caption = caption_lines(explanation, threshold)
        try:
            return await self.pool.run(
                owner,
                self.settings.decode_timeout_s,
                draw_explanation,
                outcome.image,
                explanation.heatmaps,
                explanation.shares,
                caption,
                OVERLAY_SIDE,
            )
        except (TaskTimeout, TaskFailed) as error:
            raise ApiError(503, "busy", f"drawing the overlays failed: {error}.") from None

    def model_info(self) -> dict:
        detector = self.detector
        model_file = detector.model_file
        return {
            "dfx_version": __version__,
            "model": {
                "name": self.settings.model_name,
                "sha256": self.settings.model_sha256,
                "architecture": model_file.architecture,
                "backbone": model_file.backbone,
                "classes": list(detector.classes),
                "preprocessing": model_file.preprocessing.to_dict(),
                "threshold": self.threshold.to_dict(),
                "calibrated_threshold": detector.threshold,
                "metrics": model_file.metrics,
                "written_by_dfx": model_file.dfx_version,
            },
            "runtime": {"name": detector.backend, "device": str(detector.placement.device)},
            "limits": {
                "max_batch": self.settings.max_batch,
                "max_wait_ms": self.settings.max_wait_ms,
                "max_queue": self.settings.max_queue,
                "max_upload_bytes": self.settings.max_upload_bytes,
                "max_files": self.settings.max_files,
                "max_pixels": self.settings.max_pixels,
            },
            "auth": self.settings.token is not None,
        }


def _static_files() -> dict[str, bytes]:
    folder = importlib.resources.files("dfx.serve").joinpath("static")
    return {
        entry.name: entry.read_bytes()
        for entry in folder.iterdir()
        if entry.is_file() and any(entry.name.endswith(s) for s in _CONTENT_TYPES)
    }


def create_app(detector, settings: ServeConfig | None = None) -> FastAPI:
    """The ASGI application serving ``detector``: a loaded :class:`dfx.api.Detector`, or a
    callable that loads one (then /readyz says 503 until it has loaded and warmed up).

    Loading and warming up run in a thread at startup, so /healthz answers at once;
    shutdown lets the queued images finish first.
    """
    settings = settings or ServeConfig()
    service = Service(detector, settings)
    assets = _static_files()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loop = asyncio.get_running_loop()
        starting = loop.run_in_executor(None, service.start)
        yield
        service.stopping = True  # /readyz turns 503, so a load balancer sends no more
        await starting
        await loop.run_in_executor(None, service.stop, settings.request_timeout_s)

    swagger_assets = _swagger_ui_folder()
    app = FastAPI(
        title="dfx",
        version=__version__,
        summary="Is an image real, GAN-generated or diffusion-generated? (DeepFeatureX Net)",
        lifespan=lifespan,
        # Served below from the swagger-ui-bundle package, so /docs works offline too.
        docs_url=None if swagger_assets is not None else "/docs",
        redoc_url=None,
    )
    app.state.service = service
    app.add_middleware(Guard, allowed_hosts=settings.allowed_hosts)
    if swagger_assets is not None:
        _serve_docs_offline(app, swagger_assets)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError):
        return error_response(error.status, error.error, error.detail, error.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):
        from http import HTTPStatus

        phrase = HTTPStatus(error.status_code).phrase.lower()
        return error_response(error.status_code, phrase, error.detail, error.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError):
        problems = [
            {"where": ".".join(map(str, e.get("loc", ()))), "problem": e.get("msg", "")}
            for e in error.errors()
        ]
        return error_response(400, "malformed request", problems)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception):
        return error_response(500, "internal error", type(error).__name__)

    @app.get("/healthz", tags=["health"])
    async def healthz():
        """The process is alive (answers even while the model works)."""
        return json_response({"status": "ok"})

    @app.get("/readyz", tags=["health"])
    async def readyz():
        """The model is loaded and warmed up (503 before, and while shutting down)."""
        service.check_ready()
        return json_response({"status": "ready", "queued": service.batcher.queued})

    @app.get(f"{API}/model", tags=["model"])
    async def model(request: Request):
        """Classes, backbone, preprocessing, threshold, stored metrics, versions, SHA-256."""
        service.authorize(request)
        service.check_ready()
        return json_response(service.model_info())

    @app.post(f"{API}/predict", tags=["detect"], openapi_extra=_MULTIPART_BODY)
    async def predict(
        request: Request,
        threshold: float | None = Query(
            None, ge=0.0, le=1.0, description="Threshold on P(fake) for this request."
        ),
    ):
        """One record per uploaded image, in upload order, as ``dfx predict --json`` writes
        them (``path`` is the file name); an unreadable file gets ``{path, error}``."""
        service.authorize(request)
        service.check_ready()
        uploads = await service.uploads(request)
        return json_response(await while_connected(request, service.predict(uploads, threshold)))

    @app.post(f"{API}/explain", tags=["detect"], openapi_extra=_MULTIPART_BODY)
    async def explain(
        request: Request,
        target: str = Query(
            "predicted", description="Class to explain: predicted, dm, gan or real."
        ),
        method: str = Query(
            "gradcam",
            description="Heatmap method: gradcam, gradcam-relative, gradcam++, layercam or "
            "hirescam (docs/explain.md).",
        ),
    ):
        """One image: the ``dfx explain --json`` record, its threshold, and the overlays and
        contact sheet as base64 PNG under ``images`` (keys dm, gan, real or detector, sheet)."""
        service.authorize(request)
        service.check_ready()
        uploads = await service.uploads(request)
        if len(uploads) > 1:
            raise ApiError(400, "one image", f"explain takes one image, got {len(uploads)}.")
        explained = service.explain(uploads[0], target, method)
        return json_response(await while_connected(request, explained))

    @app.get("/", include_in_schema=False)
    async def page():
        return _asset(assets, "index.html")

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str):
        return _asset(assets, name)

    return app


async def while_connected(request: Request, work):
    """The result of the coroutine ``work``, unless the client goes first: then the work is
    cancelled (its tasks in the workers killed, its queued images dropped)."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
    if task.cancelled() or not task.done():
        await asyncio.gather(task, return_exceptions=True)
        _log.info("%s before its answer; its work was cancelled.", CLIENT_LEFT)
        raise ApiError(400, "client disconnected", "the client left before the answer.")
    return task.result()


async def _disconnected(request: Request) -> None:
    """Returns once the client has closed the connection (the body has been read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _swagger_ui_folder():
    """Swagger UI's files from the swagger-ui-bundle package (the serve extra), or None."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:  # FastAPI's /docs then loads Swagger UI from its CDN
        return None
    return swagger_ui_path


def _serve_docs_offline(app: FastAPI, folder) -> None:
    """``/docs``: Swagger UI over ``/openapi.json``, its script and style served by dfx."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    app.mount("/docs-assets", StaticFiles(directory=folder), name="docs-assets")

    page = get_swagger_ui_html(
        openapi_url=app.openapi_url,
        title="dfx API",
        swagger_js_url="/docs-assets/swagger-ui-bundle.js",
        swagger_css_url="/docs-assets/swagger-ui.css",
        swagger_favicon_url="/docs-assets/favicon-32x32.png",
    )
    headers = {"Content-Security-Policy": docs_policy(page.body.decode())}

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return Response(page.body, media_type="text/html; charset=utf-8", headers=headers)


def docs_policy(html: str) -> str:
    """The CSP of the Swagger UI page: its bundle from dfx, and its one inline script by hash
    (Swagger UI sets inline styles and shows data: images)."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
        for script in re.findall(r"<script>(.*?)</script>", html, flags=re.DOTALL)
    )
    return (
        f"default-src 'none'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'none'"
    )


def _asset(assets: dict[str, bytes], name: str) -> Response:
    if name not in assets:
        raise ApiError(404, "not found", f"no asset {name!r}.")
    suffix = name[name.rfind(".") :]
    return Response(assets[name], media_type=_CONTENT_TYPES[suffix], headers=_PAGE_HEADERS)
