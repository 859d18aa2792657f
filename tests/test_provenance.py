"""Provenance: what files say about their origin, reported beside the verdict, never in it."""

from __future__ import annotations

import json
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin
from typer.testing import CliRunner

from dfx.cli import app
from dfx.data.decoding import ImageBytes
from dfx.data.provenance import has_c2pa_box, read_provenance

runner = CliRunner()

PARAMETERS = (
    "a lighthouse at dusk, oil painting\nNegative prompt: blurry\n"
    "Steps: 30, Sampler: DPM++ 2M, CFG scale: 7, Seed: 42, Model: sd_xl_base_1.0"
)
XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
    b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description rdf:about="" '
    b'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
    b'xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
    b"Iptc4xmpExt:DigitalSourceType="
    b'"http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia" '
    b'xmp:CreatorTool="ImageMaker 3"/></rdf:RDF></x:xmpmeta>'
)


def _photo() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def _description(label: str) -> bytes:
    # A type UUID, toggles 0x03 (requestable, labelled), then the label, NUL-terminated.
    return _box(
        b"jumd",
        b"c2pa\x00\x11\x00\x10\x80\x00\x00\xaa\x00\x38\x9b\x71\x03" + label.encode() + b"\x00",
    )


def minimal_c2pa_store(generator: str) -> bytes:
    """A JUMBF manifest store holding one claim with a claim generator (not signed)."""
    claim_cbor = b"\xa1" + bytes([0x60 + 15]) + b"claim_generator"
    claim_cbor += bytes([0x60 + len(generator)]) + generator.encode()
    claim = _box(b"jumb", _description("c2pa.claim") + _box(b"cbor", claim_cbor))
    manifest = _box(b"jumb", _description("urn:uuid:0d9a1c2e-test") + claim)
    return _box(b"jumb", _description("c2pa") + manifest)


def _with_png_chunk(png: bytes, kind: bytes, data: bytes) -> bytes:
    chunk = struct.pack(">I", len(data)) + kind + data
    chunk += struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    end = png.rindex(b"IEND") - 4
    return png[:end] + chunk + png[end:]


@pytest.fixture()
def files(tmp_path) -> dict[str, Path]:
    photo = _photo()
    paths = {name: tmp_path / name for name in ("sd.png", "stock.jpg", "c2pa.png")}
    paths |= {"plain.png": tmp_path / "plain.png", "plain.jpg": tmp_path / "plain.jpg"}
    text = PngImagePlugin.PngInfo()
    text.add_text("parameters", PARAMETERS)
    photo.save(paths["sd.png"], pnginfo=text)
    exif = Image.Exif()
    exif[0x0131] = "PhotoEditor 2.1"
    photo.save(paths["stock.jpg"], quality=90, xmp=XMP, exif=exif.tobytes())
    photo.save(paths["plain.png"])
    photo.save(paths["plain.jpg"], quality=75)
    store = minimal_c2pa_store("TestGen/1.0 c2pa-rs/0.0")
    paths["c2pa.png"].write_bytes(_with_png_chunk(paths["plain.png"].read_bytes(), b"caBX", store))
    return paths


def _claims(path: Path) -> list[tuple[str, str, str]]:
    return [(c.source, c.name, c.value) for c in read_provenance(path).claims]


def test_bytes_in_memory_say_what_their_file_says(files):
    for name, path in files.items():
        in_memory = read_provenance(ImageBytes(name, path.read_bytes()))
        assert in_memory == read_provenance(path), name


def test_png_parameters_chunk_is_found_with_an_excerpt(files):
    [(source, name, value)] = _claims(files["sd.png"])
    assert (source, name) == ("png-text", "parameters")
    assert value.startswith("a lighthouse at dusk, oil painting Negative prompt: blurry Steps")
    assert len(value) == 80 and value.endswith("…")


def test_jpeg_xmp_source_type_creator_tool_and_exif_software(files):
    provenance = read_provenance(files["stock.jpg"])
    assert [(c.source, c.name, c.value) for c in provenance.claims] == [
        ("xmp", "DigitalSourceType", "trainedAlgorithmicMedia"),
        ("xmp", "CreatorTool", "ImageMaker 3"),
        ("exif", "Software", "PhotoEditor 2.1"),
    ]
    assert provenance.jpeg_quality == 90


def test_c2pa_box_is_found_with_its_claim_generator(files, monkeypatch):
    raw = files["c2pa.png"].read_bytes()
    assert has_c2pa_box(raw) and not has_c2pa_box(files["plain.png"].read_bytes())
    monkeypatch.setitem(sys.modules, "c2pa", None)  # as without c2pa-python: read the box
    assert _claims(files["c2pa.png"]) == [
        ("c2pa", "claim_generator", "TestGen/1.0 c2pa-rs/0.0"),
        ("c2pa", "validation", "not checked"),
    ]


def test_an_unsigned_c2pa_manifest_is_unreadable_to_the_sdk(files):
    import c2pa  # noqa: F401  (the c2pa extra, which the test extra brings)

    assert _claims(files["c2pa.png"]) == [
        ("c2pa", "claim_generator", "TestGen/1.0 c2pa-rs/0.0"),
        ("c2pa", "validation", "unreadable (malformed or unsigned)"),
    ]
    assert read_provenance(files["c2pa.png"]).c2pa


def test_a_plain_photo_says_nothing(files):
    assert read_provenance(files["plain.png"]).to_dict() == {"claims": [], "jpeg_quality": None}
    assert read_provenance(files["plain.jpg"]).to_dict() == {"claims": [], "jpeg_quality": 75}
    assert read_provenance(files["plain.png"].parent / "absent.png").to_dict()["claims"] == []


def test_predict_reports_provenance_and_it_never_moves_the_scores(trained, files, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(files["plain.png"].read_bytes()[:60])
    order = ["sd.png", "plain.png", "c2pa.png", "stock.jpg"]
    arguments = [str(files[name]) for name in order] + [str(broken)]
    result = runner.invoke(app, ["predict", "--model", str(trained["model"]), *arguments, "--json"])
    assert result.exit_code == 1  # the broken file is reported, the others still run
    records = {Path(r["path"]).name: r for r in map(json.loads, result.stdout.splitlines())}
    assert "provenance" not in records["broken.png"] and records["broken.png"]["error"]
    assert records["sd.png"]["provenance"]["claims"][0]["name"] == "parameters"
    assert records["c2pa.png"]["provenance"]["claims"][0]["source"] == "c2pa"
    assert records["plain.png"]["provenance"] == {"claims": [], "jpeg_quality": None}
    # Same pixels, with and without metadata: the same probabilities and verdict.
    for name in ("sd.png", "c2pa.png"):
        assert records[name]["probs"] == records["plain.png"]["probs"]
        assert records[name]["fake"] == records["plain.png"]["fake"]

    table = runner.invoke(app, ["predict", "--model", str(trained["model"]), str(files["sd.png"])])
    assert table.exit_code == 0
    assert "provenance" in table.stdout and "parameters" in table.stdout  # cells fold at 80


def test_rendered_prediction_table_with_provenance():
    from rich.console import Console

    from dfx.cli.tables import predictions_table

    claims = [
        {"source": "xmp", "name": "DigitalSourceType", "value": "trainedAlgorithmicMedia"},
        {
            "source": "png-text",
            "name": "parameters",
            "value": "a lighthouse at dusk, oil " + 40 * "x",
        },
    ]
    records = [
        {
            "path": "a.jpg",
            "label": "real",
            "probs": {"dm": 0.1, "gan": 0.1, "real": 0.8},
            "p_fake": 0.2,
            "fake": False,
            "provenance": {"claims": claims, "jpeg_quality": 90},
            "error": None,
        },
        {
            "path": "b.png",
            "label": "gan",
            "probs": {"dm": 0.1, "gan": 0.8, "real": 0.1},
            "p_fake": 0.9,
            "fake": True,
            "provenance": {"claims": [], "jpeg_quality": None},
            "error": None,
        },
    ]
    console = Console(width=80, record=True, color_system=None, force_terminal=False)
    console.print(predictions_table(records))
    expected = """\
┏━━━━━━━┳━━━━━━━┳━━━━━━━┳━━━━━━━┳━━━━━━━━┳━━━━━━━━┳━━━━━━┳━━━━━━━━━━━━━━━━━━━━━┓
┃ path  ┃ label ┃  p_dm ┃ p_gan ┃ p_real ┃ p_fake ┃ fake ┃ provenance          ┃
┡━━━━━━━╇━━━━━━━╇━━━━━━━╇━━━━━━━╇━━━━━━━━╇━━━━━━━━╇━━━━━━╇━━━━━━━━━━━━━━━━━━━━━┩
│ a.jpg │ real  │ 0.100 │ 0.100 │  0.800 │  0.200 │ no   │ source type:        │
│       │       │       │       │        │        │      │ trainedAlgorithmicM │
│       │       │       │       │        │        │      │ edia                │
│       │       │       │       │        │        │      │ parameters: a       │
│       │       │       │       │        │        │      │ lighthouse at dusk, │
│       │       │       │       │        │        │      │ oil x…              │
│       │       │       │       │        │        │      │ JPEG q90            │
│ b.png │ gan   │ 0.100 │ 0.800 │  0.100 │  0.900 │ yes  │                     │
└───────┴───────┴───────┴───────┴────────┴────────┴──────┴─────────────────────┘
"""
    assert console.export_text() == expected


def test_a_c2pa_box_after_megabytes_of_pixels_is_found(files, tmp_path):
    # An ancillary private chunk stands in for 6 MB of image data before the manifest.
    png = _with_png_chunk(files["plain.png"].read_bytes(), b"prVt", bytes(6 * 1024 * 1024))
    big = tmp_path / "big.png"
    big.write_bytes(_with_png_chunk(png, b"caBX", minimal_c2pa_store("LateGen/2")))
    assert read_provenance(big).claims[0].value == "LateGen/2"
