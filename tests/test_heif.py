"""HEIC/HEIF photos (the iPhone camera's format) through pillow-heif."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import Image
from typer.testing import CliRunner

from dfx.cli import app
from dfx.data.decoding import load_rgb
from dfx.data.discovery import expand_inputs, not_an_image

runner = CliRunner()


def write_heic(path: Path, orientation: int = 6) -> Path:
    """A 40 × 24 red HEIC with a blue top-left corner, stored with an EXIF orientation."""
    image = Image.new("RGB", (40, 24), (220, 20, 20))
    image.paste((20, 20, 220), (0, 0, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = orientation
    heif = pillow_heif.from_pillow(image)
    path.parent.mkdir(parents=True, exist_ok=True)
    heif.save(path, quality=95, exif=exif.tobytes())
    return path


def test_heic_is_an_image_by_content_and_decodes_upright(tmp_path):
    path = write_heic(tmp_path / "photos" / "IMG_0001.HEIC")
    assert path.read_bytes()[4:12] == b"ftypheic"
    assert not_an_image(path) is None
    files, problems = expand_inputs([tmp_path / "photos"])
    assert files == [path] and problems == []
    pixels = np.asarray(load_rgb(path))
    assert pixels.shape == (40, 24, 3)  # orientation 6: turned a quarter clockwise
    # The stored top-left corner is now the top-right one.
    assert pixels[3, 20, 2] > 150 and pixels[3, 20, 0] < 100
    assert pixels[3, 3, 0] > 150 and pixels[36, 3, 0] > 150


def test_without_pillow_heif_the_reason_names_it(tmp_path):
    path = write_heic(tmp_path / "a.heic")
    code = (
        "import sys; sys.modules['pillow_heif'] = None\n"
        "from dfx.data.decoding import load_rgb\n"
        "from dfx.errors import ImageReadError\n"
        f"try:\n    load_rgb({str(path)!r})\nexcept ImageReadError as e:\n    print(e)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "install pillow-heif" in result.stdout


def test_predict_classifies_a_heic_photo(trained, tmp_path):
    path = write_heic(tmp_path / "IMG_0002.heic")
    result = runner.invoke(app, ["predict", "--model", str(trained["model"]), str(path), "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["error"] is None
    assert record["label"] in ("dm", "gan", "real")
    assert abs(sum(record["probs"].values()) - 1) < 1e-5
