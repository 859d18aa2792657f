"""The settings of ``dfx serve`` and the check for its extra (torch- and FastAPI-free)."""

from __future__ import annotations

from dataclasses import dataclass, field

from dfx.errors import DfxError
from dfx.extras import missing_extra_message, require
from dfx.limits import DEFAULT_MAX_PIXELS

INSTALL_HINT = missing_extra_message("serve")


def check_available() -> None:
    """Fail in one sentence when the ``serve`` extra is not installed."""
    require("serve")


@dataclass
class ServeSettings:
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

    def __post_init__(self) -> None:
        positive = {
            "`max_batch`": self.max_batch,
            "`max_upload_mb`": self.max_upload_mb,
            "`workers_per_model`": self.workers_per_model,
            "`max_queue`": self.max_queue,
            "`max_files`": self.max_files,
            "`request_timeout_s`": self.request_timeout_s,
            "`decode_timeout_s`": self.decode_timeout_s,
        }
        for name, value in positive.items():
            if value <= 0:
                raise DfxError(f"{name} must be positive, got {value}.")
        if self.max_wait_ms < 0:
            raise DfxError(f"`max_wait_ms` must be 0 or more, got {self.max_wait_ms}.")
        if self.max_files > self.max_queue:
            raise DfxError(
                f"max_files ({self.max_files}) must not exceed max_queue ({self.max_queue})."
            )

    @property
    def max_upload_bytes(self) -> int:
        """:attr:`max_upload_mb` in bytes."""
        return int(self.max_upload_mb * 1024 * 1024)
