"""What an image file says about its own origin: evidence beside the pixel score, never in it.

Many generators label their output: Stable Diffusion front ends write their settings into
PNG text chunks, services embed a C2PA manifest or the IPTC digital source type
``trainedAlgorithmicMedia`` in XMP, and editors name themselves in EXIF ``Software``.
Such metadata is easy to strip and easy to forge, so it is reported as what the file
claims; it never changes a probability or a verdict.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from dfx.data.decoding import ImageBytes, ImageSource, open_image
from dfx.data.metadata import jpeg_quality, xmp_packet
from dfx.limits import METADATA_SCAN_BYTES

EXCERPT_CHARS = 80
"""Longest value kept for a claim (generator settings can run to kilobytes)."""

SCAN_HEAD_BYTES = 4 * 1024 * 1024
"""Leading bytes searched for C2PA and XMP blocks that Pillow does not expose.

Containers put metadata before the pixels (JPEG APP segments, PNG chunks before IDAT)
or after them; the head and :data:`SCAN_TAIL_BYTES` of the end are searched, so that
large files cost little beside the prediction.
"""

SCAN_TAIL_BYTES = 1024 * 1024
"""Trailing bytes searched as well."""

GENERATOR_TEXT_KEYS: tuple[str, ...] = (
    "parameters",  # AUTOMATIC1111, Forge, Fooocus, SD.Next
    "prompt",  # ComfyUI
    "workflow",  # ComfyUI
    "invokeai_metadata",  # InvokeAI
    "sd-metadata",  # InvokeAI (older)
    "Dream",  # InvokeAI (oldest)
    "generation_data",  # various web front ends
    "Software",  # NovelAI, editors
    "Source",  # NovelAI
    "Comment",  # NovelAI's settings
    "Description",  # prompts of several services
)
"""PNG text chunks that generators and editors write about how an image was made."""

_EXIF_SOFTWARE = 0x0131

# Metadata fields are read by a bounded parser, without regular expressions: each field's
# name is found with bytes.find, and its value is read from a window of FIELD_WINDOW_BYTES
# after it, for at most FIELD_TRIES occurrences. So a packet costs one pass of find over at
# most METADATA_SCAN_BYTES, whatever it holds (tests/test_hostile.py feeds every reader 4 MB
# of hostile text).
FIELD_WINDOW_BYTES = 512
"""Bytes after a field's name in which its value must be found."""

FIELD_TRIES = 16
"""Occurrences of a field's name examined before the field is taken as absent.

A file can hide a claim by stripping it anyway, so stopping early loses nothing; it keeps a
packet holding the name a million times as cheap as one holding it once.
"""

_RESOURCE = b"rdf:resource"


@dataclass(frozen=True)
class ProvenanceClaim:
    """One statement a file makes about its origin."""

    source: str
    """Where it was found: ``c2pa``, ``png-text``, ``xmp`` or ``exif``."""
    name: str
    """The field: ``claim_generator`` or ``validation`` (C2PA), a PNG text key,
    ``DigitalSourceType``, ``CreatorTool`` or ``Software``."""
    value: str
    """Its value, shortened to :data:`EXCERPT_CHARS` characters."""

    def describe(self) -> str:
        """One line, e.g. ``xmp DigitalSourceType: trainedAlgorithmicMedia``."""
        return f"{self.source} {self.name}: {self.value}"

    def to_dict(self) -> dict:
        """Plain-data form for JSON."""
        return {"source": self.source, "name": self.name, "value": self.value}


@dataclass
class Provenance:
    """What a file says about its origin (claims, not proof) and how it was compressed."""

    claims: list[ProvenanceClaim] = field(default_factory=list)
    """Statements about its origin, in the order C2PA, PNG text, XMP, EXIF (empty: none)."""
    jpeg_quality: int | None = None
    """Estimated JPEG quality factor (None: not a JPEG)."""

    @property
    def c2pa(self) -> bool:
        """Whether the file carries a C2PA manifest."""
        return any(claim.source == "c2pa" for claim in self.claims)

    def to_dict(self) -> dict:
        """Plain-data form for JSON."""
        return {
            "claims": [claim.to_dict() for claim in self.claims],
            "jpeg_quality": self.jpeg_quality,
        }


def read_provenance(path: ImageSource) -> Provenance:
    """The origin claims of an image file (or its bytes); one that cannot be read gives an
    empty result."""
    in_memory = isinstance(path, ImageBytes)
    if not in_memory:
        path = Path(path)
    try:
        raw = _scanned(path.data) if in_memory else _head_and_tail(path)
    except OSError:
        return Provenance()
    provenance = Provenance(claims=_c2pa_claims(path, raw))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with open_image(path) as image:
                provenance.claims += _header_claims(image, raw)
                if image.format in ("JPEG", "MPO"):
                    provenance.jpeg_quality = jpeg_quality(getattr(image, "quantization", None))
    except Exception:  # provenance is extra evidence; decoding reports a bad file
        pass
    return provenance


def _scanned(data: bytes) -> bytes:
    """The head and tail of bytes in memory, as :func:`_head_and_tail` reads them from a file."""
    if len(data) <= SCAN_HEAD_BYTES:
        return data
    return data[:SCAN_HEAD_BYTES] + data[max(SCAN_HEAD_BYTES, len(data) - SCAN_TAIL_BYTES) :]


def _head_and_tail(path: Path) -> bytes:
    with open(path, "rb") as handle:
        raw = handle.read(SCAN_HEAD_BYTES)
        if len(raw) == SCAN_HEAD_BYTES:
            end = handle.seek(0, 2)
            handle.seek(max(SCAN_HEAD_BYTES, end - SCAN_TAIL_BYTES))
            raw += handle.read()
    return raw


def _header_claims(image: Image.Image, raw: bytes) -> list[ProvenanceClaim]:
    """Claims in PNG text chunks, XMP and EXIF, as Pillow reads them from the header."""
    claims = _png_text_claims(image.info) if image.format == "PNG" else []
    claims += _xmp_claims(xmp_packet(image.info) or _raw_xmp(raw))
    software = image.getexif().get(_EXIF_SOFTWARE)
    if software and not any(c.name == "Software" for c in claims):
        claims.append(ProvenanceClaim("exif", "Software", _excerpt(software)))
    return claims


def _excerpt(value: object) -> str:
    if isinstance(value, bytes):
        value = value[:METADATA_SCAN_BYTES].decode("utf-8", "replace")
    text = " ".join(str(value)[:METADATA_SCAN_BYTES].split())
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1] + "…"


def _png_text_claims(info: dict) -> list[ProvenanceClaim]:
    wanted = {key.lower(): key for key in GENERATOR_TEXT_KEYS}
    return [
        ProvenanceClaim("png-text", key, _excerpt(value))
        for key, value in info.items()
        if isinstance(key, str) and key.lower() in wanted and isinstance(value, str) and value
    ]


def _raw_xmp(raw: bytes) -> bytes:
    """The first XMP packet in raw bytes (empty when there is none), found in linear time."""
    start = raw.find(b"<x:xmpmeta")
    if start < 0:
        return b""
    end = raw.find(b"</x:xmpmeta>", start)
    return raw[start : end + len(b"</x:xmpmeta>")] if end >= 0 else b""


def _xmp_claims(xmp: bytes) -> list[ProvenanceClaim]:
    claims = []
    xmp = xmp[:METADATA_SCAN_BYTES]
    source_type = _field_value(xmp, b"DigitalSourceType", single_word=True, resource=True)
    if source_type:
        # IPTC's terms are URIs; the last segment (trainedAlgorithmicMedia) is the term.
        term = source_type.decode("utf-8", "replace").rstrip("/").rsplit("/", 1)[-1]
        claims.append(ProvenanceClaim("xmp", "DigitalSourceType", _excerpt(term)))
    tool = _field_value(xmp, b"CreatorTool")
    if tool:
        claims.append(ProvenanceClaim("xmp", "CreatorTool", _excerpt(tool)))
    return claims


def _field_value(
    xmp: bytes, name: bytes, *, single_word: bool = False, resource: bool = False
) -> bytes | None:
    """The value of the first of :data:`FIELD_TRIES` occurrences of ``name`` that has one.

    As an attribute (``name="v"``), an element (``<x:name>v</x:name>``, stripped; with
    ``single_word`` only one word) or, with ``resource``, an ``rdf:resource="v"`` in the
    same tag. Each try reads :data:`FIELD_WINDOW_BYTES`, so the cost is one ``find`` pass
    over the packet plus a bounded amount.
    """
    at = xmp.find(name)
    for _ in range(FIELD_TRIES):
        if at < 0:
            return None
        window = xmp[at + len(name) : at + len(name) + FIELD_WINDOW_BYTES]
        value = _window_value(window, single_word, resource)
        if value:
            return value
        at = xmp.find(name, at + len(name))
    return None


def _window_value(window: bytes, single_word: bool, resource: bool) -> bytes | None:
    """The value that the bytes after a field's name give it, or None."""
    text = window.lstrip()
    if text.startswith(b"="):  # an attribute: name="value"
        return _quoted(text[1:].lstrip())
    if text.startswith(b">"):  # an element: <x:name>value</x:name>
        end = text.find(b"<")
        value = text[1:end].strip() if end > 0 else b""
        if value and not (single_word and len(value.split()) > 1):
            return value
        return None
    if resource:  # <x:name rdf:resource="value"/>: the attribute within the same tag
        tag_end = window.find(b">")
        at = window.find(_RESOURCE, 0, tag_end if tag_end >= 0 else len(window))
        if at >= 0:
            rest = window[at + len(_RESOURCE) :].lstrip()
            if rest.startswith(b"="):
                return _quoted(rest[1:].lstrip())
    return None


def _quoted(text: bytes) -> bytes | None:
    """The quoted value ``text`` starts with (``"v"`` or ``'v'``), or None."""
    quote = text[:1]
    if quote not in (b'"', b"'"):
        return None
    end = text.find(quote, 1)
    return text[1:end] if end > 0 else None


# --- C2PA ---------------------------------------------------------------------------------------


def has_c2pa_box(raw: bytes) -> bool:
    """Whether the bytes hold a JUMBF description box labelled ``c2pa`` (a C2PA manifest store).

    The box is found the same way in every container (JPEG APP11, PNG caBX, ISO BMFF uuid,
    WebP C2PA): ``jumd``, a 16-byte type UUID, a toggle byte, then the label.
    """
    start = raw.find(b"jumd")
    while start >= 0:
        if raw[start + 21 : start + 26] == b"c2pa\x00":
            return True
        start = raw.find(b"jumd", start + 4)
    return False


UNCHECKED_C2PA = "not checked"
"""Validation of a C2PA manifest read without c2pa-python."""

UNREADABLE_C2PA = "unreadable (malformed or unsigned)"
"""Validation of a C2PA manifest that c2pa-python could not read."""


def c2pa_sdk_available() -> bool:
    """Whether c2pa-python is installed, so that C2PA signatures can be checked."""
    try:
        import c2pa  # noqa: F401
    except ImportError:
        return False
    return True


def _c2pa_claims(path: Path | ImageBytes, raw: bytes) -> list[ProvenanceClaim]:
    if not has_c2pa_box(raw):
        return []
    read = _c2pa_generator_from_sdk(path) if c2pa_sdk_available() else None
    if read is not None:
        generator, state = read
        return [ProvenanceClaim("c2pa", "claim_generator", _excerpt(generator))] + (
            [ProvenanceClaim("c2pa", "validation", state)] if state else []
        )
    # Without the SDK, or for a manifest it cannot read: the box's own text, unverified.
    state = UNREADABLE_C2PA if c2pa_sdk_available() else UNCHECKED_C2PA
    info_at = raw.find(b"claim_generator_info")
    generator = _cbor_text_after(raw, b"claim_generator") or (
        _cbor_text_after(raw[info_at:], b"name") if info_at >= 0 else None
    )
    return [
        ProvenanceClaim("c2pa", "claim_generator", _excerpt(generator or "present")),
        ProvenanceClaim("c2pa", "validation", state),
    ]


def _c2pa_generator_from_sdk(path: Path | ImageBytes) -> tuple[str, str | None] | None:
    """The active manifest's claim generator and validation state, through c2pa-python."""
    try:
        import c2pa
    except ImportError:
        return None
    # A stream alone: the SDK tells the container from the bytes, as it does for a file.
    source = path.stream() if isinstance(path, ImageBytes) else str(path)
    try:
        with c2pa.Reader(source) as reader:
            store = json.loads(reader.json())
            state = reader.get_validation_state()
    except Exception:  # a malformed or unsigned manifest: fall back to reading the box
        return None
    manifest = store.get("manifests", {}).get(store.get("active_manifest"), {})
    generator = manifest.get("claim_generator")
    if not generator:
        info = manifest.get("claim_generator_info") or [{}]
        generator = " ".join(str(info[0].get(k, "")) for k in ("name", "version")).strip()
    if not generator:
        return None
    return generator, (str(state).lower() if state else None)


def _cbor_text_after(raw: bytes, key: bytes) -> str | None:
    """The CBOR text string that follows the text key ``key`` (a map entry), if any."""
    encoded = bytes([0x60 + len(key)]) + key if len(key) < 24 else b"\x78" + bytes([len(key)]) + key
    at = raw.find(encoded)
    if at < 0:
        return None
    at += len(encoded)
    if at >= len(raw):
        return None
    head = raw[at]
    if 0x60 <= head < 0x78:
        length, at = head - 0x60, at + 1
    elif head == 0x78 and at + 1 < len(raw):
        length, at = raw[at + 1], at + 2
    elif head == 0x79 and at + 2 < len(raw):
        length, at = int.from_bytes(raw[at + 1 : at + 3], "big"), at + 3
    else:
        return None
    text = raw[at : at + length].decode("utf-8", "replace")
    return text or None
