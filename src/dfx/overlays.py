"""Heatmap overlays and contact sheets of ``dfx explain`` as PNG files (Pillow; no printing).

An overlay is the image with its heatmap painted over it in the turbo colour map, more
opaque where the map is hotter, so that cold regions show the image unchanged. A contact
sheet puts the image and its overlays side by side with the verdict in a caption.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from dfx.atomic import atomic_write
from dfx.classes import CLASSES

MAX_OPACITY = 0.6
"""Opacity of the colour where the heatmap is 1 (where it is 0, the image shows as it is)."""

PANEL_SIDE = 256
"""Longer side of each panel of a contact sheet, in pixels."""

_MARGIN = 8
_LINE = 18


def overlay(image: Image.Image, heatmap: np.ndarray) -> Image.Image:
    """``image`` (RGB) with ``heatmap`` (H×W in [0, 1], the image's size) painted over it."""
    from matplotlib import colormaps

    heat = np.clip(np.asarray(heatmap, dtype=np.float32), 0.0, 1.0)
    if heat.shape != (image.height, image.width):
        raise ValueError(f"heatmap {heat.shape} does not match image {image.size}")
    colour = colormaps["turbo"](heat)[..., :3]
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    alpha = (MAX_OPACITY * heat)[..., None]
    blended = (1.0 - alpha) * pixels + alpha * colour
    return Image.fromarray(np.rint(blended * 255.0).astype(np.uint8), "RGB")


def contact_sheet(image: Image.Image, explanation, threshold: float) -> Image.Image:
    """The image, then each specialist's overlay, titled, with the verdict as caption."""
    overlays = {key: overlay(image, heatmap) for key, heatmap in explanation.heatmaps.items()}
    return _sheet(image, overlays, explanation.shares, caption_lines(explanation, threshold))


def _sheet(
    image: Image.Image,
    overlays: dict[str, Image.Image],
    shares: dict[str, float] | None,
    caption: list[str],
) -> Image.Image:
    titles, panels = ["image"], [image]
    for key, painted in overlays.items():
        share = shares.get(key) if shares else None
        titles.append(f"{key} specialist" + (f" · share {share:.0%}" if share is not None else ""))
        panels.append(painted)
    panels = [_panel(p) for p in panels]
    font = _font(13)
    caption = list(caption)
    if stretched(image.size):
        caption.append(f"shown stretched to {MAX_PANEL_ASPECT}:1: the image is "
                       f"{image.width}×{image.height} pixels")  # fmt: skip
    width = sum(p.width for p in panels) + _MARGIN * (len(panels) + 1)
    top = _MARGIN + _LINE
    height = top + max(p.height for p in panels) + _MARGIN + _LINE * len(caption) + _MARGIN
    sheet = Image.new("RGB", (max(width, 560), height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    left = _MARGIN
    for title, panel in zip(titles, panels):
        draw.text((left, _MARGIN), title, fill=(0, 0, 0), font=font)
        sheet.paste(panel, (left, top))
        left += panel.width + _MARGIN
    y = top + max(p.height for p in panels) + _MARGIN
    for line in caption:
        draw.text((_MARGIN, y), line, fill=(0, 0, 0), font=font)
        y += _LINE
    return sheet


def caption_lines(explanation, threshold: float) -> list[str]:
    """The verdict, probabilities, P(fake) at the threshold and shares, as caption lines."""
    prediction = explanation.prediction
    verdict = "fake" if prediction.fake else "not fake"
    probs = "  ".join(f"P({c}) {prediction.probs[c]:.3f}" for c in CLASSES)
    lines = [
        f"{Path(explanation.path).name}: {prediction.label}  ·  {probs}",
        f"P(fake) {prediction.p_fake:.3f}: {verdict} at threshold {threshold:.3f}"
        f"  ·  maps explain: {explanation.target} ({explanation.method})",
    ]
    if explanation.shares:
        shares = "  ".join(f"{k} {v:.0%}" for k, v in explanation.shares.items())
        lines.append(f"shares of the {explanation.target} score: {shares}")
    return lines


SHEET = "sheet"
"""The key of the contact sheet among :func:`explanation_images`."""


def explanation_images(
    explanation, image: Image.Image, threshold: float, max_side: int | None = None
) -> dict[str, Image.Image]:
    """Each specialist's overlay (by key: dm, gan, real or ``detector``), then the sheet.

    ``image`` is the input as displayed (EXIF orientation applied), the heatmaps' size; with
    ``max_side``, a larger image and its heatmaps are scaled down to that longer side first.
    """
    caption = caption_lines(explanation, threshold)
    return drawn_images(image, explanation.heatmaps, explanation.shares, caption, max_side)


def drawn_images(
    image: Image.Image,
    heatmaps: dict[str, np.ndarray],
    shares: dict[str, float] | None,
    caption: list[str],
    max_side: int | None = None,
) -> dict[str, Image.Image]:
    """:func:`explanation_images` from plain data: the heatmaps (image's size), shares and
    caption lines, drawn at most ``max_side`` pixels on the longer side (None: as given)."""
    if max_side is not None:
        image, heatmaps = fit(image, heatmaps, max_side)
    overlays = {key: overlay(image, heatmap) for key, heatmap in heatmaps.items()}
    return overlays | {SHEET: _sheet(image, overlays, shares, caption)}


def fit(
    image: Image.Image, heatmaps: dict[str, np.ndarray], max_side: int
) -> tuple[Image.Image, dict[str, np.ndarray]]:
    """``image`` and its heatmaps scaled down to ``max_side`` on the longer side (if larger)."""
    scale = max_side / max(image.size)
    if scale >= 1.0:
        return image, heatmaps
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    # reducing_gap: a box reduction first, then Lanczos on the rest (fast on large images).
    image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    heatmaps = {
        key: np.asarray(
            Image.fromarray(np.asarray(heat, dtype=np.float32), "F").resize(
                size, Image.Resampling.BILINEAR, reducing_gap=3.0
            )
        )
        for key, heat in heatmaps.items()
    }
    return image, heatmaps


def write_explanation(
    explanation, image: Image.Image, folder: str | Path, stem: str, threshold: float
) -> list[Path]:
    """Write ``<stem>.<specialist>.png`` overlays and ``<stem>.sheet.png``; return the paths.

    ``image`` is the input as displayed (EXIF orientation applied), the heatmaps' size.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return [
        _save(picture, folder / f"{stem}.{key}.png")
        for key, picture in explanation_images(explanation, image, threshold).items()
    ]


def png_bytes(image: Image.Image) -> bytes:
    """``image`` encoded as PNG, in memory."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


MAX_PANEL_ASPECT = 4
"""A panel is at most this many times longer than wide: thinner images are shown stretched."""

_LETTERBOX = (235, 235, 235)


def _panel(image: Image.Image) -> Image.Image:
    """A :data:`PANEL_SIDE` square: the image scaled so its longer side fills it, letterboxed.

    Small images keep sharp pixels. An extreme aspect ratio (a 7×3000 strip) is stretched to
    :data:`MAX_PANEL_ASPECT`:1, so that every panel is visible and all are the same size.
    """
    scale = PANEL_SIDE / max(image.size)
    least = PANEL_SIDE // MAX_PANEL_ASPECT
    size = tuple(max(least, round(side * scale)) for side in image.size)
    resample = Image.Resampling.NEAREST if scale >= 2 else Image.Resampling.LANCZOS
    scaled = image.resize(size, resample)
    cell = Image.new("RGB", (PANEL_SIDE, PANEL_SIDE), _LETTERBOX)
    cell.paste(scaled, ((PANEL_SIDE - size[0]) // 2, (PANEL_SIDE - size[1]) // 2))
    return cell


def stretched(size: tuple[int, int]) -> bool:
    """Whether a contact sheet shows an image of this (width, height) stretched."""
    return max(size) > MAX_PANEL_ASPECT * min(size)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one fixed-size bitmap font
        return ImageFont.load_default()


def _save(image: Image.Image, path: Path) -> Path:
    with atomic_write(path, "wb") as handle:
        handle.write(png_bytes(image))
    return path
