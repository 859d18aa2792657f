"""The settings of ``dfx serve`` (torch- and FastAPI-free; its extra is ``require("serve")``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from dfx.errors import DfxError
from dfx.limits import DEFAULT_MAX_PIXELS
from dfx.serve.pool import default_workers


@dataclass
class ServeConfig:
    """How the service batches, what it accepts, and who may use it."""

    max_batch: int = 16
    """Most images classified in one forward pass."""
    max_wait_ms: float = 5.0
    """Longest a queued image waits for others to join its batch."""
    max_queue: int = 256
    """Most images waiting for the network; more are refused with 503 and Retry-After."""
    max_upload_mb: float = 20.0
    """Largest request body in MiB (413 beyond; counted while it arrives)."""
    max_files: int = 64
    """Most images in one request."""
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    """Largest image (width × height) decoded, as ``--max-pixels`` of predict."""
    threshold: float | None = None
    """Threshold on P(fake) (None: the model's calibrated one, else 0.5)."""
    token: str | None = field(default=None, repr=False)
    """Bearer token every /v1 request must present (None: no authentication)."""
    workers_per_model: int = 1
    """Inference threads sharing the model (explanations run alone)."""
    request_timeout_s: float = 60.0
    """Longest a request may take to arrive, and to wait for its results."""
    decode_timeout_s: float = 10.0
    """Longest one image may take to decode."""
    model_name: str | None = None
    """The model file's name, as /v1/model reports it."""
    model_sha256: str | None = None
    """The model file's SHA-256, as /v1/model reports it."""
    decode_workers: int | None = None
    """Worker processes that decode uploads and draw overlays (None: a core each, up to 4)."""
    decode_per_request: int | None = None
    """Most workers busy for one request at once (None: half of them, at least 1)."""
    decode_memory_mb: float = 2048.0
    """Address space a worker may add to what it uses idle, in MiB (0: no cap)."""
    max_uploads: int = 16
    """Most request bodies read at once (each up to max_upload_mb); more get 503."""
    allowed_hosts: tuple[str, ...] | None = None
    """Host header values accepted (``*.example.com`` for subdomains); others get 400."""
    max_connections: int | None = None
    """Most open connections; more are answered 503 and closed (None: from RLIMIT_NOFILE)."""
    limit_concurrency: int | None = None
    """uvicorn's limit of connections and requests before it answers 503 (None: no other)."""
    timeout_keep_alive: int = 5
    """Seconds an idle keep-alive connection stays open between requests."""
    header_timeout_s: float = 10.0
    """Longest a connection may take to send a complete request head (then it is closed)."""
    max_header_bytes: int = 16 * 1024
    """Largest request line plus headers (h11_max_incomplete_event_size; 400 beyond)."""
    backlog: int = 128
    """Connections the kernel holds waiting to be accepted."""

    def __post_init__(self) -> None:
        positive = {
            "`max_batch`": self.max_batch,
            "`max_upload_mb`": self.max_upload_mb,
            "`workers_per_model`": self.workers_per_model,
            "`max_queue`": self.max_queue,
            "`max_files`": self.max_files,
            "`request_timeout_s`": self.request_timeout_s,
            "`decode_timeout_s`": self.decode_timeout_s,
            "`max_uploads`": self.max_uploads,
            "`timeout_keep_alive`": self.timeout_keep_alive,
            "`header_timeout_s`": self.header_timeout_s,
            "`max_header_bytes`": self.max_header_bytes,
            "`backlog`": self.backlog,
        }
        optional = {
            "`decode_workers`": self.decode_workers,
            "`decode_per_request`": self.decode_per_request,
            "`max_connections`": self.max_connections,
            "`limit_concurrency`": self.limit_concurrency,
        }
        positive |= {name: value for name, value in optional.items() if value is not None}
        for name, value in positive.items():
            if value <= 0:
                raise DfxError(f"{name} must be positive, got {value}.")
        if self.decode_memory_mb < 0:
            raise DfxError(f"`decode_memory_mb` must be 0 or more, got {self.decode_memory_mb}.")
        if self.max_wait_ms < 0:
            raise DfxError(f"`max_wait_ms` must be 0 or more, got {self.max_wait_ms}.")
        if self.max_files > self.max_queue:
            raise DfxError(
                f"max_files ({self.max_files}) must not exceed max_queue ({self.max_queue})."
            )

    @property
    def workers(self) -> int:
        """:attr:`decode_workers`, or its default: one per core, at most 4."""
        return self.decode_workers or default_workers()

    @property
    def per_request(self) -> int:
        """:attr:`decode_per_request`, or its default: half the workers, at least 1."""
        return self.decode_per_request or max(1, self.workers // 2)

    @property
    def max_upload_bytes(self) -> int:
        """:attr:`max_upload_mb` in bytes."""
        return int(self.max_upload_mb * 1024 * 1024)
