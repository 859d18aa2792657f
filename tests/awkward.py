"""A corpus of awkward image files: every decoding case of the reliability issue."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

RED = (255, 0, 0)
BLUE = (0, 0, 255)

DECODABLE = (
    "exif_rotated.jpg",
    "cmyk.jpg",
    "grey16.png",
    "palette_transparent.png",
    "grey_alpha.png",
    "rgba.png",
    "animated.gif",
    "animated.webp",
    "animated.png",
    "png_named.jpg",
)
"""Files that must decode to RGB."""

BIG = "big.png"
"""Fine, but 1,000 × 1,000 pixels: refused under --max-pixels 500000."""

BROKEN = {
    "empty.png": "empty file (0 bytes)",
    "truncated.png": "corrupt or truncated image",
    "text_named.png": "not an image",
    "dangling.png": "dangling symbolic link",
}
"""Files that must be reported, with a fragment of their reason."""

UNREADABLE = "no_permission.png"
"""A valid PNG whose read permission is removed (only effective when not running as root)."""


def running_as_root() -> bool:
    """True where file permissions do not stop this process (root ignores them)."""
    return hasattr(os, "geteuid") and os.geteuid() == 0


def png_bytes(size=(16, 16), colour=RED) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def write_corpus(folder: Path) -> Path:
    """Write every awkward file into ``folder`` (created) and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    # Landscape pixels stored with EXIF orientation 6: a viewer shows them rotated to portrait.
    landscape = Image.new("RGB", (40, 20), RED)
    exif = Image.Exif()
    exif[0x0112] = 6
    landscape.save(folder / "exif_rotated.jpg", exif=exif.tobytes())
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(folder / "cmyk.jpg")  # red in CMYK
    grey = np.full((16, 16), 32768, dtype=np.uint16)
    Image.fromarray(grey).save(folder / "grey16.png")
    palette = Image.new("P", (16, 16), 1)
    palette.putpalette([0, 255, 0] + [255, 0, 0] * 255)
    palette.paste(0, (0, 0, 8, 16))  # left half: palette index 0, made transparent
    palette.save(folder / "palette_transparent.png", transparency=0)
    Image.new("LA", (16, 16), (200, 0)).save(folder / "grey_alpha.png")  # fully transparent
    Image.new("RGBA", (16, 16), (255, 0, 0, 255)).save(folder / "rgba.png")
    frames = [Image.new("RGB", (16, 16), RED), Image.new("RGB", (16, 16), BLUE)]
    for name in ("animated.gif", "animated.webp", "animated.png"):
        frames[0].save(folder / name, save_all=True, append_images=frames[1:], duration=100)
    (folder / "png_named.jpg").write_bytes(png_bytes())
    Image.new("L", (1000, 1000), 7).save(folder / BIG)
    (folder / "empty.png").write_bytes(b"")
    (folder / "truncated.png").write_bytes(png_bytes((64, 64))[:60])
    (folder / "text_named.png").write_text("this is not a picture\n")
    os.symlink(folder / "nowhere.png", folder / "dangling.png")
    os.symlink(folder, folder / "cycle")  # a symbolic-link cycle: folder/cycle/cycle/...
    unreadable = folder / UNREADABLE
    unreadable.write_bytes(png_bytes())
    unreadable.chmod(0)
    (folder / "README.txt").write_text("notes that sit beside the images\n")
    return folder
