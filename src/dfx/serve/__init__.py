"""``dfx serve``: the detector behind an HTTP API and a web page (the ``serve`` extra).

:func:`create_app` builds the ASGI application around a loaded :class:`dfx.api.Detector`:
uploads are read into memory under a size limit and decoded concurrently, the images of
concurrent requests are classified together by a :class:`MicroBatcher` on a worker thread,
and the page at ``/`` is served from package data. Importing this package needs neither
FastAPI nor torch; :func:`create_app` needs FastAPI.
"""

from __future__ import annotations

from dfx.serve.batcher import MicroBatcher, QueueFull, ShuttingDown
from dfx.serve.config import ServeConfig

__all__ = [
    "MicroBatcher",
    "QueueFull",
    "ServeConfig",
    "ShuttingDown",
    "create_app",
]


def create_app(detector, settings: ServeConfig | None = None):
    """The FastAPI application serving ``detector`` (see :func:`dfx.serve.app.create_app`)."""
    from dfx.serve.app import create_app as build

    return build(detector, settings)
