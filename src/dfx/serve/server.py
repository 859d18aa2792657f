"""Running the application under uvicorn with the connection limits of :class:`ServeConfig`.

uvicorn closes an idle connection only after a response (its keep-alive timeout), and
accepts connections until the process runs out of file descriptors. dfx therefore runs it
with its own h11 protocol, which also closes a connection that has not sent a complete
request head within ``header_timeout_s``, and answers 503 to connections past
``max_connections`` (by default the open-file limit less a reserve), closing them at once;
and it logs a rejected accept (EMFILE) once a minute, without a traceback.
"""

from __future__ import annotations

import logging
import time

from uvicorn.protocols.http.h11_impl import H11Protocol

from dfx.serve.config import ServeConfig

REQUIRES_EXTRA = "serve"

RESERVED_FDS = 64
"""File descriptors kept back from connections: the model, logs, sockets of the workers."""

DEFAULT_MAX_CONNECTIONS = 1024
"""Connection cap when the open-file limit would allow more."""

_BUSY_BODY = b'{"error":"busy","detail":"too many connections; retry shortly."}'
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"retry-after: 1\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s"
) % (len(_BUSY_BODY), _BUSY_BODY)


def max_connections(settings: ServeConfig) -> int:
    """``settings.max_connections``, or what the open-file limit leaves for connections."""
    if settings.max_connections is not None:
        return settings.max_connections
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return DEFAULT_MAX_CONNECTIONS
    if soft == resource.RLIM_INFINITY:
        return DEFAULT_MAX_CONNECTIONS
    reserve = RESERVED_FDS + 2 * settings.workers
    return max(8, min(DEFAULT_MAX_CONNECTIONS, soft - reserve))


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a connection cap and a timeout for the request head."""

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    header_timeout_s: float = 10.0

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._head_timer = None
        if len(self.connections) > self.max_connections:
            transport.write(_BUSY)
            transport.close()
            return
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.cycle is not None and not self.cycle.response_complete:
            self._disarm()  # a request has started: the request timeout takes over

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _disarm(self) -> None:
        timer, self._head_timer = getattr(self, "_head_timer", None), None
        if timer is not None:
            timer.cancel()

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.cycle is None or self.cycle.response_complete:
            self.transport.close()


class _OncePerMinute(logging.Filter):
    """Lets through one "accept() out of system resource" record a minute, traceback-free."""

    def __init__(self) -> None:
        super().__init__()
        self._last = float("-inf")

    def filter(self, record: logging.LogRecord) -> bool:
        if "out of system resource" not in str(record.msg):
            return True
        now = time.monotonic()
        if now - self._last < 60.0:
            return False
        self._last = now
        record.exc_info, record.exc_text = None, None
        record.msg = f"{record.msg} (too many open connections; further ones for a minute unlogged)"
        return True


def protocol_for(settings: ServeConfig) -> type[GuardedH11Protocol]:
    """The protocol class carrying ``settings``' connection cap and head timeout."""
    return type(
        "DfxH11Protocol",
        (GuardedH11Protocol,),
        {
            "max_connections": max_connections(settings),
            "header_timeout_s": settings.header_timeout_s,
        },
    )


def uvicorn_config(app, settings: ServeConfig, host: str, port: int, **options):
    """The uvicorn.Config that serves ``app`` with ``settings``' limits."""
    import uvicorn

    logging.getLogger("asyncio").addFilter(_OncePerMinute())
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol_for(settings),
        limit_concurrency=settings.limit_concurrency,
        timeout_keep_alive=settings.timeout_keep_alive,
        h11_max_incomplete_event_size=settings.max_header_bytes,
        backlog=settings.backlog,
        timeout_graceful_shutdown=int(settings.request_timeout_s),
        server_header=False,
        **options,
    )


def serve(app, settings: ServeConfig, host: str, port: int) -> None:
    """Run ``app`` until SIGINT or SIGTERM (then the requests in flight finish)."""
    import uvicorn

    uvicorn.Server(uvicorn_config(app, settings, host, port, log_level="info")).run()
