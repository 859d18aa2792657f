"""Reading the images of a multipart/form-data request into memory, under a size limit.

The body is parsed as it arrives and refused (413) as soon as it passes the limit, so a
large upload is never buffered whole; the files are kept in memory, never spooled to disk
(Starlette's own form parser writes parts over 1 MiB to temporary files).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dfx.data.decoding import ImageBytes

REQUIRES_EXTRA = "serve"
"""python-multipart parses the body: use this module after ``require('serve')``."""

FIELD = "files"
"""The form field that carries the images."""

MAX_NAME = 255
"""Longest file name kept (names only label results)."""


class UploadError(Exception):
    """A request whose body cannot be taken: the HTTP status, a short error and the detail."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)


async def read_uploads(request, max_bytes: int, max_files: int) -> list[ImageBytes]:
    """The files of the form field ``files`` in upload order, each named by its file name.

    UploadError: 415 not multipart/form-data, 400 malformed, 413 over ``max_bytes`` (from
    Content-Length before reading, or counted while reading) or over ``max_files`` files.
    """
    from python_multipart.multipart import (
        MultipartParseError,
        MultipartParser,
        parse_options_header,
    )

    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data":
        raise UploadError(
            415,
            "unsupported media type",
            f"send the images as multipart/form-data in the field '{FIELD}'.",
        )
    boundary = options.get(b"boundary")
    if not boundary:
        raise UploadError(400, "malformed request", "the multipart body has no boundary.")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)

    parts: list[_Part] = []
    current = _Part()
    header_field, header_value = bytearray(), bytearray()

    def on_part_begin() -> None:
        nonlocal current
        current = _Part()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        current.headers[bytes(header_field).lower()] = bytes(header_value)
        header_field.clear()
        header_value.clear()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        current.data.extend(data[start:end])

    def on_part_end() -> None:
        if _field_name(current) == FIELD:
            if len(parts) == max_files:
                raise UploadError(413, "too many files", f"at most {max_files} images per request.")
            parts.append(current)

    callbacks = {
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_part_data": on_part_data,
        "on_part_end": on_part_end,
    }
    parser = MultipartParser(boundary, callbacks)
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_bytes:
                raise _too_large(max_bytes)
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as error:
        detail = f"malformed multipart body ({error})."
        raise UploadError(400, "malformed request", detail) from None
    return [
        ImageBytes(_file_name(part, position), bytes(part.data))
        for position, part in enumerate(parts)
    ]


def _too_large(max_bytes: int) -> UploadError:
    return UploadError(
        413,
        "request too large",
        f"the request body exceeds the limit of {max_bytes:,} bytes (--max-upload-mb).",
    )


def _disposition(part: _Part) -> dict[bytes, bytes]:
    from python_multipart.multipart import parse_options_header

    _, options = parse_options_header(part.headers.get(b"content-disposition", b""))
    return options


def _field_name(part: _Part) -> str:
    return _disposition(part).get(b"name", b"").decode("utf-8", "replace")


def _file_name(part: _Part, position: int) -> str:
    name = _disposition(part).get(b"filename", b"").decode("utf-8", "replace")
    # Only the last path component: some clients send the whole local path.
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    return name[:MAX_NAME] or f"upload #{position}"
