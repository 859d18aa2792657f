"""Hostile and awkward image files: decoded right, or reported with their reason."""

from __future__ import annotations

import builtins
import json
import os
import re
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dfx.data.decoding import ImageBytes, load_rgb
from dfx.data.discovery import expand_inputs, not_an_image
from dfx.data.layout import scan_dataset
from dfx.errors import ImageReadError
from tests import awkward


@pytest.fixture()
def corpus(tmp_path) -> Path:
    return awkward.write_corpus(tmp_path / "corpus")


def pixels(path: Path, **options) -> np.ndarray:
    image = load_rgb(path, **options)
    assert image.mode == "RGB"
    return np.asarray(image)


def test_exif_orientation_is_applied(corpus):
    assert pixels(corpus / "exif_rotated.jpg").shape == (40, 20, 3)  # stored 40 wide, 20 high


def test_cmyk_becomes_rgb(corpus):
    assert np.abs(pixels(corpus / "cmyk.jpg")[8, 8].astype(int) - awkward.RED).max() < 8


def test_16_bit_grey_is_scaled_not_clipped(corpus):
    assert pixels(corpus / "grey16.png")[0, 0].tolist() == [128, 128, 128]  # 32768 / 256


def test_transparency_is_composited_on_black(corpus):
    palette = pixels(corpus / "palette_transparent.png")
    assert palette[0, 0].tolist() == [0, 0, 0]  # transparent palette entry
    assert palette[0, 15].tolist() == [255, 0, 0]  # opaque red
    assert pixels(corpus / "grey_alpha.png").max() == 0  # fully transparent grey
    assert pixels(corpus / "rgba.png")[0, 0].tolist() == [255, 0, 0]


@pytest.mark.parametrize("name", ["animated.gif", "animated.webp", "animated.png"])
def test_animated_images_give_their_first_frame(corpus, name):
    with Image.open(corpus / name) as image:
        assert getattr(image, "n_frames", 1) == 2  # really animated
    first = pixels(corpus / name)[8, 8].astype(int)
    assert np.abs(first - awkward.RED).max() < 16


def test_content_decides_not_the_extension(corpus):
    assert pixels(corpus / "png_named.jpg")[0, 0].tolist() == [255, 0, 0]
    assert not_an_image(corpus / "png_named.jpg") is None
    assert not_an_image(corpus / "text_named.png") == "not an image by its content"


@pytest.mark.parametrize("format_name", ["BMP", "TIFF", "AVIF"])
def test_bmp_tiff_and_avif_are_recognised_by_content(tmp_path, format_name):
    """Named as another format, or as no image at all: the bytes decide."""
    picture = Image.new("RGB", (24, 16), (200, 30, 30))
    folder = tmp_path / "inbox"
    folder.mkdir()
    names = [f"{format_name.lower()}_named.png", f"{format_name.lower()}_named.jpg",
             f"{format_name.lower()}.dat"]  # fmt: skip
    options = {"quality": 95} if format_name == "AVIF" else {}
    for name in names:
        picture.save(folder / name, format_name, **options)
    (folder / "notes.dat").write_text("not an image")
    found, missing = expand_inputs([folder])
    assert sorted(p.name for p in found) == sorted(names) and missing == []
    for name in names:
        assert not_an_image(folder / name) is None, name
        decoded = pixels(folder / name)
        assert decoded.shape == (16, 24, 3)
        assert np.abs(decoded[8, 12].astype(int) - [200, 30, 30]).max() <= 8, name


def test_the_pixel_limit_defaults_to_89_478_485(trained, tmp_path):
    """9460 × 9460 = 89,491,600 pixels is over the default of the library and of every
    command (a one-bit PNG of about 11 KB, refused from its header)."""
    from tests.helpers import invoke

    big = tmp_path / "big.png"
    Image.new("1", (9460, 9460)).save(big)
    expected = "too many pixels (9460×9460 = 89,491,600 > the limit of 89,478,485)"
    with pytest.raises(ImageReadError) as refused:
        load_rgb(big)
    assert str(refused.value) == expected
    result = invoke("predict", "-M", trained["model"], big, "--json", "--device", "cpu")
    assert result.exit_code == 1, result.output  # the one input failed
    assert json.loads(result.stdout)["error"] == expected


def test_pixel_limit_is_per_file(corpus):
    assert pixels(corpus / awkward.BIG).shape == (1000, 1000, 3)
    with pytest.raises(ImageReadError, match="too many pixels .*1,000,000 > the limit of 500,000"):
        load_rgb(corpus / awkward.BIG, max_pixels=500_000)
    assert pixels(corpus / "rgba.png", max_pixels=500_000).shape == (16, 16, 3)


def test_pillow_decompression_bomb_is_refused(tmp_path):
    # Over twice Pillow's own limit: refused even when dfx's limit is lifted.
    bomb = tmp_path / "bomb.png"
    Image.new("1", (14_000, 14_000)).save(bomb)
    with pytest.raises(ImageReadError, match="too many pixels"):
        load_rgb(bomb, max_pixels=None)


@pytest.mark.parametrize("name, reason", sorted(awkward.BROKEN.items()))
def test_broken_files_raise_their_reason(corpus, name, reason):
    with pytest.raises(ImageReadError, match=re.escape(reason)):
        load_rgb(corpus / name)


def _decoded_or_reason(source, **options):
    try:
        return np.asarray(load_rgb(source, **options))
    except ImageReadError as error:
        return str(error)


@pytest.mark.parametrize(
    "name", [*awkward.DECODABLE, awkward.BIG, *sorted(set(awkward.BROKEN) - {"dangling.png"})]
)
def test_bytes_in_memory_decode_as_their_file(corpus, name):
    # Uploads (dfx serve) are decoded from memory: the same pixels, the same reasons.
    path = corpus / name
    in_memory = ImageBytes(name, path.read_bytes())
    for options in ({}, {"max_pixels": 500_000}, {"target_size": 8}):
        expected = _decoded_or_reason(path, **options)
        got = _decoded_or_reason(in_memory, **options)
        if isinstance(expected, str):
            assert got == expected
        else:
            assert np.array_equal(got, expected)


def test_unreadable_file_is_reported_as_permission_denied(corpus, monkeypatch):
    path = corpus / awkward.UNREADABLE
    if awkward.running_as_root():
        # Root reads files whatever their mode; make open() answer as it would for a user.
        real_open = builtins.open

        def refusing_open(file, *args, **kwargs):
            if Path(str(file)) == path:
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", refusing_open)
    with pytest.raises(ImageReadError, match="permission denied"):
        load_rgb(path)
    assert not_an_image(path) == "permission denied"


def test_folder_scan_survives_a_symlink_cycle(tmp_path):
    root = tmp_path / "data"
    awkward.write_corpus(root / "real" / "awkward")
    scan = scan_dataset(root)
    names = {Path(r.path).name for r in scan.records}
    # The cycle link inside the corpus is not followed, so every file appears once.
    assert len(scan.records) == len(names)
    assert set(awkward.DECODABLE) <= names
    # Image files that cannot be read are failures to report; README.txt is passed over.
    unreadable = {record.path: reason for record, reason in scan.unreadable}
    assert unreadable["real/awkward/empty.png"] == "empty file (0 bytes)"
    assert unreadable["real/awkward/dangling.png"] == "dangling symbolic link"
    assert scan.reasons == {"real/awkward/README.txt": "not an image by its content"}


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs symbolic links and FIFOs")
def test_scans_follow_linked_folders_once_and_never_open_pipes(tmp_path):
    elsewhere = tmp_path / "other-disk" / "stylegan"
    elsewhere.mkdir(parents=True)
    data = tmp_path / "data"
    for folder in ("dm/ldm", "real/photo"):
        (data / folder).mkdir(parents=True)
    for i, folder in enumerate((elsewhere, data / "dm" / "ldm", data / "real" / "photo")):
        Image.new("RGB", (16, 16), (40 * i, 0, 0)).save(folder / "a.png")
    (data / "gan").mkdir()
    (data / "gan" / "stylegan").symlink_to(elsewhere, target_is_directory=True)
    (data / "real" / "photo" / "up").symlink_to(data / "real", target_is_directory=True)
    pipe = data / "real" / "photo" / "pipe.png"
    os.mkfifo(pipe)

    # Opening the FIFO would block until a writer comes: run with a deadline, never hang.
    scan = within_seconds(10, lambda: scan_dataset(data), release=pipe)
    assert [r.path for r in scan.records] == [
        "dm/ldm/a.png",
        "gan/stylegan/a.png",  # the linked generator folder is scanned
        "real/photo/a.png",  # once: the cycle through photo/up is not entered again
    ]
    unreadable = {record.path: reason for record, reason in scan.unreadable}
    assert unreadable["real/photo/pipe.png"].startswith("not a regular file")
    with pytest.raises(ImageReadError, match="not a regular file"):
        within_seconds(10, lambda: load_rgb(pipe), release=pipe)

    empty = tmp_path / "empty"
    empty.mkdir()
    files, problems = within_seconds(10, lambda: expand_inputs([empty, pipe]), release=pipe)
    assert files == [pipe]  # named explicitly: tried, and reported by the decoder
    assert problems == [(str(empty), "a folder with no image files in it")]


def within_seconds(seconds: float, call, *, release: Path):
    """``call()``'s result or exception; fails the test if it blocks longer than ``seconds``.

    A call stuck opening the FIFO ``release`` for reading is let go by opening its other end.
    """
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as error:  # handed to the test's thread below
            outcome["error"] = error

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        try:
            os.close(os.open(release, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
        pytest.fail(f"the call blocked for more than {seconds} seconds (it opened {release}?)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


# --- The commands over the corpus -------------------------------------------------------


def class_layout_with_corpus(tmp_path: Path) -> Path:
    """dm/ and gan/ with plain images, real/awkward/ with the corpus."""
    from dfx import synthetic

    data = tmp_path / "data"
    synthetic.write_dataset(data, per_generator=4, image_size=32, seed=1)
    awkward.write_corpus(data / "real" / "awkward")
    return data


def test_split_over_the_corpus(tmp_path):
    from tests.helpers import invoke

    data = class_layout_with_corpus(tmp_path)
    result = invoke("split", data, "--out", tmp_path / "m.csv", "--json")
    # The manifest of the readable images is written; the unreadable ones make it exit 1.
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["skip_reasons"] == {"real/awkward/README.txt": "not an image by its content"}
    failed = {Path(f["path"]).name: f["error"] for f in report["failures"]}
    for name, reason in awkward.BROKEN.items():
        assert reason in failed[name], name
    if not awkward.running_as_root():
        assert failed["no_permission.png"] == "permission denied"
    assert "dangling symbolic link" in result.stderr
    manifest = (tmp_path / "m.csv").read_text()
    for name in (*awkward.DECODABLE, awkward.BIG):
        assert f"real/awkward/{name}," in manifest
    for name in awkward.BROKEN:
        assert f"real/awkward/{name}," not in manifest
    assert "cycle/" not in manifest


def test_predict_over_the_corpus(trained, tmp_path):
    from tests.helpers import invoke

    corpus = awkward.write_corpus(tmp_path / "corpus")
    result = invoke(
        "predict", "--model", trained["model"], corpus, "--json", "--max-pixels", "500000"
    )
    assert result.exit_code == 1, result.output  # some inputs failed, the others ran
    records = {Path(r["path"]).name: r for r in map(json.loads, result.stdout.splitlines())}
    for name in awkward.DECODABLE:
        assert records[name]["error"] is None and records[name]["label"] in ("dm", "gan", "real")
    assert "too many pixels" in records[awkward.BIG]["error"]
    for name, reason in awkward.BROKEN.items():
        assert reason in records[name]["error"], name
    if not awkward.running_as_root():
        assert records[awkward.UNREADABLE]["error"] == "permission denied"
    assert "README.txt" not in records  # a non-image with a non-image name is passed over
    assert not any("cycle" in path for path in records)


def test_evaluate_over_the_corpus(trained, tmp_path):
    from tests.helpers import invoke

    data = class_layout_with_corpus(tmp_path)
    report = tmp_path / "report.json"
    result = invoke(
        "evaluate",
        "--model",
        trained["model"],
        "--data",
        data,
        "--no-balanced",
        "--max-pixels",
        "500000",
        "--workers",
        "0",
        "-o",
        report,
    )
    assert result.exit_code == 1, result.output
    document = json.loads(report.read_text())
    failed = {Path(f["path"]).name: f["error"] for f in document["failures"]}
    assert "too many pixels" in failed[awkward.BIG]
    assert "corrupt or truncated" in failed["truncated.png"]
    # 8 dm + 8 gan + 8 real synthetic images and every decodable corpus file.
    readable = len(awkward.DECODABLE) + (0 if not awkward.running_as_root() else 1)
    assert document["n"] == 24 + readable
    # Empty, misnamed and dangling image files are failures too, with the API's reasons.
    for name, reason in awkward.BROKEN.items():
        assert reason in failed[name], name
