"""The ASGI middleware in front of every route of ``dfx serve``: hosts, headers, redirects.

- With a list of allowed hosts, a request whose Host header is not on it gets a 400 JSON
  error (the health checks excepted: probes often name the address, not the host).
- Every response gets the security headers below; a route that sets its own policy (the
  page, ``/docs``) keeps it.
- A redirect's Location is made relative (path and query), so it never echoes the Host
  header (Starlette's trailing-slash redirect builds an absolute URL from it).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from dfx.report import to_json

SECURITY_HEADERS = {
    # JSON and the API's own pages need nothing from anywhere; the page and /docs widen
    # this for their own assets.
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-resource-policy": "same-origin",
}

HEALTH_PATHS = frozenset({"/healthz", "/readyz"})
"""Answered whatever the Host header says."""


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    """Whether the Host header value ``host`` (port allowed) names one of ``allowed``."""
    name = host.strip().lower()
    if name.startswith("["):  # [::1]:8000
        name = name[: name.find("]") + 1]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    name = name.rstrip(".")
    for pattern in allowed:
        pattern = pattern.strip().lower().rstrip(".")
        if pattern == "*" or name == pattern:
            return True
        if pattern.startswith("*.") and name.endswith(pattern[1:]) and len(name) > len(pattern) - 1:
            return True
    return False


class Guard:
    """Wraps an ASGI app with the host check, the security headers and relative redirects."""

    def __init__(self, app, allowed_hosts: tuple[str, ...] | None = None) -> None:
        self.app = app
        self.allowed_hosts = tuple(allowed_hosts) if allowed_hosts else None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.allowed_hosts is not None and scope["path"] not in HEALTH_PATHS:
            host = _header(scope, b"host")
            if not host_allowed(host, self.allowed_hosts):
                await _refuse_host(send, host)
                return

        async def guarded_send(message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = _guarded_headers(message.get("headers", []))
            await send(message)

        await self.app(scope, receive, guarded_send)


def _header(scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return ""


def _guarded_headers(headers) -> list[tuple[bytes, bytes]]:
    out = []
    present = set()
    for key, value in headers:
        key = bytes(key).lower()
        present.add(key)
        if key == b"location":
            value = _relative(bytes(value))
        out.append((key, bytes(value)))
    for key, value in SECURITY_HEADERS.items():
        if key.encode() not in present:
            out.append((key.encode(), value.encode()))
    return out


def _relative(location: bytes) -> bytes:
    """``location`` without scheme and host: ``/path?query`` (relative to the request)."""
    parts = urlsplit(location.decode("latin-1"))
    if not parts.scheme and not parts.netloc:
        return location
    path = "/" + parts.path.lstrip("/")  # never //host: a leading double slash names a host
    return (path + (f"?{parts.query}" if parts.query else "")).encode("latin-1")


async def _refuse_host(send, host: str) -> None:
    body = to_json(
        {"error": "bad host", "detail": f"the Host header {host[:100]!r} is not served here."},
        indent=None,
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 400, "headers": _guarded_headers(headers)})
    await send({"type": "http.response.body", "body": body})
