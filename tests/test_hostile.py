"""Hostile inputs: small valid files that would freeze, exhaust or reach outside the process.

Every input is built in the test (tests/hostile.py). Sections: the metadata scan, the
decoder, ``dfx predict``, and a marked place for the live ``dfx serve`` tests.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import EpsImagePlugin, IcoImagePlugin, Image, ImageFile

from dfx.data import metadata, provenance
from dfx.data.decoding import (
    ACCEPTED_NAMES,
    NOT_ACCEPTED,
    TRUNCATION_SWITCH_ON,
    ImageBytes,
    load_rgb,
)
from dfx.data.provenance import read_provenance
from dfx.errors import ImageReadError
from dfx.limits import DECODE_SIDE_MULTIPLE, MAX_ASPECT_RATIO
from tests import hostile

PATTERN_SECONDS = 0.1
"""The issue's bound on one search of 4 MB of hostile text by one pattern."""

ANSWER_SECONDS = 10.0
"""The issue's bound on the answer to any hostile input (beyond a plain image's)."""

EXTRA_MEMORY_BYTES = 500 * 1024 * 1024
"""The issue's bound on the memory a hostile input may add (peak RSS)."""

HOSTILE_TEXT_BYTES = 4 * 1024 * 1024


def best_of_three(call) -> float:
    """The shortest of three timed calls, in seconds (a busy machine slows some runs)."""
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        call()
        timings.append(time.perf_counter() - start)
    return min(timings)


# --- The metadata scan -------------------------------------------------------------------


def metadata_scanners() -> dict:
    """Every reader of raw metadata bytes: the provenance scan's, and any regular expression
    in the modules that read metadata (there is none now; one added later is held to this)."""
    patterns = {
        f"{module.__name__}.{name}": value.search
        for module in (provenance, metadata)
        for name, value in vars(module).items()
        if isinstance(value, re.Pattern)
    }
    return {
        "_xmp_claims": provenance._xmp_claims,
        "_raw_xmp": provenance._raw_xmp,
        "has_c2pa_box": provenance.has_c2pa_box,
        "_cbor_text_after": lambda text: provenance._cbor_text_after(text, b"claim_generator"),
        **patterns,
    }


@pytest.mark.parametrize("scanner", sorted(metadata_scanners()))
def test_every_metadata_reader_is_linear_on_4_mb_of_hostile_text(scanner):
    scan = metadata_scanners()[scanner]
    slow = {}
    for kind, text in hostile.hostile_texts(HOSTILE_TEXT_BYTES).items():
        seconds = best_of_three(lambda text=text: scan(text))
        if seconds >= PATTERN_SECONDS:
            slow[kind] = round(seconds, 3)
    assert not slow


def test_the_xmp_packet_of_the_issue_is_read_at_once():
    # 257 KB of "DigitalSourceType" and no ">": 15 s of frozen server before the change.
    png = hostile.png_with_xmp(hostile.xmp_bomb(4 * 1024 * 1024))
    seconds = best_of_three(lambda: read_provenance(ImageBytes("bomb.png", png)))
    assert seconds < 10 * PATTERN_SECONDS
    assert read_provenance(ImageBytes("bomb.png", png)).claims == []


def test_hostile_bytes_after_a_jpeg_end_marker_are_read_at_once():
    tail = hostile.hostile_texts(HOSTILE_TEXT_BYTES)[repr(b"DigitalSourceType>")]
    photo = hostile.jpeg() + b"<x:xmpmeta " + tail
    seconds = best_of_three(lambda: read_provenance(ImageBytes("tail.jpg", photo)))
    assert seconds < 10 * PATTERN_SECONDS
    assert read_provenance(ImageBytes("tail.jpg", photo)).jpeg_quality == 75


@pytest.mark.parametrize(
    "field",
    [
        b'Iptc4xmpExt:DigitalSourceType="http://cv.iptc.org/newscodes/digitalsourcetype/'
        b'trainedAlgorithmicMedia"',
        b"Iptc4xmpExt:DigitalSourceType = 'trainedAlgorithmicMedia'",
        b"<Iptc4xmpExt:DigitalSourceType>\n  trainedAlgorithmicMedia\n"
        b"</Iptc4xmpExt:DigitalSourceType>",
        b'<Iptc4xmpExt:DigitalSourceType rdf:resource="http://cv.iptc.org/newscodes/'
        b'digitalsourcetype/trainedAlgorithmicMedia/"/>',
    ],
)
def test_the_bounded_parser_reads_every_form_of_the_source_type(field):
    decoys = b"DigitalSourceType " * 3  # names without a value are passed over
    packet = b'<x:xmpmeta xmlns:x="adobe:ns:meta/">' + decoys + field + b"</x:xmpmeta>"
    [claim] = provenance._xmp_claims(packet)
    assert (claim.name, claim.value) == ("DigitalSourceType", "trainedAlgorithmicMedia")


# --- The decoder -------------------------------------------------------------------------


@pytest.fixture()
def no_decoding(monkeypatch):
    """Fail the test if any Pillow decoder runs (refusals must come from the header)."""
    calls = []

    def refuse(self, *args, **kwargs):
        calls.append(self.format)
        raise AssertionError(f"the {self.format} decoder ran")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    return calls


def refusal(data: bytes, name: str = "hostile", **options) -> str:
    with pytest.raises(ImageReadError) as raised:
        load_rgb(ImageBytes(name, data), **options)
    return str(raised.value)


def test_a_thin_image_is_refused_from_its_header(no_decoding):
    reason = refusal(hostile.thin_png(), target_size=64)
    assert reason == f"too thin: 100×894784 is further from square than 1:{MAX_ASPECT_RATIO}"
    assert no_decoding == []


def test_an_image_at_the_aspect_limit_is_decoded_with_each_side_bounded():
    target = 32
    side = DECODE_SIDE_MULTIPLE * target
    image = load_rgb(ImageBytes("strip.png", hostile.zero_png(40, 40 * MAX_ASPECT_RATIO)), None,
                     target_size=target)  # fmt: skip
    assert image.mode == "RGB" and image.width == 40 and 3 * target <= image.height < side
    big = load_rgb(ImageBytes("big.png", hostile.zero_png(2000, 3000)), target_size=target)
    assert all(3 * target <= s < side for s in big.size), big.size


def test_a_zero_filled_image_at_the_pixel_limit_is_held_small():
    image = load_rgb(ImageBytes("zeros.png", hostile.zero_png(9459, 9459)), target_size=64)
    assert max(image.size) < DECODE_SIDE_MULTIPLE * 64 and image.getextrema() == ((0, 0),) * 3


def test_an_ico_wrapping_a_9_mpx_png_is_refused_before_it_opens(monkeypatch, no_decoding):
    def refuse(self):
        raise AssertionError("the ICO plugin opened the file (it decodes its PNG there)")

    monkeypatch.setattr(IcoImagePlugin.IcoImageFile, "_open", refuse)
    reason = refusal(hostile.ico_wrapping(hostile.zero_png(3000, 3000)))
    assert reason == f"ICO {NOT_ACCEPTED}: dfx reads only {ACCEPTED_NAMES}"


def test_an_eps_file_never_reaches_ghostscript(monkeypatch, no_decoding):
    started = []

    def no_process(*args, **kwargs):
        started.append(args)
        raise AssertionError("a process was started")

    monkeypatch.setattr(subprocess, "Popen", no_process)
    monkeypatch.setattr(subprocess, "check_call", no_process)
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", no_process)
    reason = refusal(hostile.eps(), "drawing.eps")
    assert reason == f"EPS {NOT_ACCEPTED}: dfx reads only {ACCEPTED_NAMES}"
    assert started == [] and "gs" not in reason.split() and "/" not in reason.split(":")[0]


def _other_formats() -> list:
    square = Image.new("RGB", (16, 16), (200, 30, 30))
    return [
        ("PCX", square, {}),
        ("TGA", square, {}),
        ("SGI", square, {}),
        ("QOI", square, {}),
        ("DDS", square, {}),
        ("XBM", square.convert("1"), {}),
        ("MSP", square.convert("1"), {}),
        ("IM", square, {}),
        ("SPIDER", square.convert("F"), {}),
        ("ICNS", Image.new("RGB", (16, 16)), {}),
        ("JPEG2000", square, {}),
        ("PPM", square, {}),
    ]


@pytest.mark.parametrize("format_name, image, options", _other_formats(), ids=lambda v: str(v)[:8])
def test_other_formats_are_refused_by_name(format_name, image, options, no_decoding):
    try:
        data = hostile.saved(image, format_name, **options)
    except (KeyError, OSError) as error:  # a codec this Pillow was built without
        pytest.skip(f"Pillow cannot write {format_name} here ({error})")
    shown = "JPEG 2000" if format_name == "JPEG2000" else format_name
    assert refusal(data) == f"{shown} {NOT_ACCEPTED}: dfx reads only {ACCEPTED_NAMES}"


def test_tiff_and_mpo_frames_are_refused_over_the_pixel_limit_before_decoding(no_decoding):
    small = Image.new("RGB", (16, 16))
    large = Image.new("RGB", (1000, 1000))
    # The frame dfx decodes is the first; its header size is checked before any decoder.
    tiff = hostile.saved(large, "TIFF", save_all=True, append_images=[small])
    mpo = hostile.saved(large, "MPO", save_all=True, append_images=[small])
    for name, data in (("pages.tif", tiff), ("camera.mpo", mpo)):
        assert refusal(data, name, max_pixels=500_000).startswith("too many pixels (1000×1000")
    assert no_decoding == []


def test_a_jpeg_declaring_more_pixels_than_its_data_hold_is_refused(no_decoding):
    data = hostile.jpeg_declaring(9000, 9000)
    assert len(data) < 1500
    assert refusal(data, target_size=64).startswith("corrupt or truncated image (its ")
    assert no_decoding == []


def test_truncation_is_never_accepted_by_a_global_switch(monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    assert refusal(hostile.jpeg()) == TRUNCATION_SWITCH_ON


def test_whole_files_of_every_accepted_format_still_decode():
    square = Image.new("RGB", (40, 30), (200, 30, 30))
    for format_name in ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO"):
        image = load_rgb(ImageBytes(format_name, hostile.saved(square, format_name)))
        assert image.size == (40, 30), format_name


PEAK_SCRIPT = """
import resource, sys
from dfx.data.decoding import ImageBytes, load_rgb
data = open(sys.argv[1], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
image = load_rgb(ImageBytes("x.png", data), target_size=int(sys.argv[2]))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(after - before, image.width, image.height, image.getextrema()[0][1])
"""


def rss_bytes(maxrss: int) -> int:
    """ru_maxrss in bytes (kilobytes on Linux, bytes on macOS)."""
    return maxrss if sys.platform == "darwin" else maxrss * 1024


@pytest.mark.parametrize(
    "name, build",
    [("grey16.png", hostile.grey16_png), ("zeros.png", lambda: hostile.zero_png(9459, 9459))],
)
def test_large_images_decode_within_the_memory_bound(tmp_path, name, build):
    # In a process of its own, so that its peak RSS measures this decoding alone.
    path = tmp_path / name
    path.write_bytes(build())
    result = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(path), "64"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    grown, width, height, brightest = map(int, result.stdout.split())
    assert rss_bytes(grown) < EXTRA_MEMORY_BYTES
    assert max(width, height) < DECODE_SIDE_MULTIPLE * 64 and brightest == 0


# --- dfx predict -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quick_model(tmp_path_factory) -> Path:
    """A detector trained for one epoch on a few images: these tests need answers, not skill."""
    from tests.conftest import train_detector

    out = tmp_path_factory.mktemp("quick")
    return train_detector(
        out, per_generator=4, image_size=32, base_epochs=1, fusion_epochs=1, base_batch_size=8
    )["model"]


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        return int(re.search(rf"{field}:\s+(\d+) kB", status.read()).group(1))


def peak_growth(call) -> tuple[object, float, int | None]:
    """``call()``'s result, its seconds, and how far it raised this process's peak RSS (bytes).

    The peak is reset first through /proc/self/clear_refs (Linux); None where that is not
    possible.
    """
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # reset the peak RSS to the current RSS
        before = _status_kb("VmRSS")
    except OSError:
        before = None
    start = time.perf_counter()
    result = call()
    seconds = time.perf_counter() - start
    grown = None if before is None else (_status_kb("VmHWM") - before) * 1024
    return result, seconds, grown


HOSTILE_FILES = {
    "thin.png": (hostile.thin_png, "too thin: 100×894784"),
    "icon.ico": (lambda: hostile.ico_wrapping(hostile.zero_png(3000, 3000)), "ICO images"),
    "drawing.eps": (hostile.eps, "EPS images are not accepted"),
    "huge.jpg": (lambda: hostile.jpeg_declaring(9000, 9000), "corrupt or truncated image"),
    "old.pcx": (lambda: hostile.saved(Image.new("RGB", (16, 16)), "PCX"), "PCX images"),
    "xmp.png": (lambda: hostile.png_with_xmp(hostile.xmp_bomb()), None),
    "tail.jpg": (lambda: hostile.jpeg() + hostile.xmp_bomb(4 * 1024 * 1024), None),
    "zeros.png": (lambda: hostile.zero_png(9459, 9459), None),
    "grey16.png": (hostile.grey16_png, None),
}
"""Each hostile class: how to build it, and the start of its error (None: it gets a verdict)."""


@pytest.mark.parametrize("name", sorted(HOSTILE_FILES))
def test_predict_answers_each_hostile_class_within_bounds(quick_model, tmp_path, name):
    from tests.helpers import invoke

    build, error = HOSTILE_FILES[name]
    path = tmp_path / name
    path.write_bytes(build())
    result, seconds, grown = peak_growth(
        lambda: invoke("predict", "--model", quick_model, path, "--json")
    )
    [record] = [json.loads(line) for line in result.stdout.splitlines()]
    if error is None:
        assert result.exit_code == 0, result.output
        assert record["error"] is None and record["label"] in ("dm", "gan", "real")
    else:
        assert result.exit_code == 1, result.output
        assert error in record["error"], record
        assert "Traceback" not in result.stderr and "/tmp" not in record["error"]
    assert seconds < ANSWER_SECONDS
    assert grown is None or grown < EXTRA_MEMORY_BYTES, grown


# --- dfx serve ---------------------------------------------------------------------------
# Live-server tests of the same classes (a 4xx or an error record, time and RSS bounds,
# /healthz answering meanwhile) go here, or in a file of their own beside this one; they
# build their inputs with tests/hostile.py.
