"""Perturbations applied to a decoded image before preprocessing, and the spec that names them.

Every perturbation is a small frozen dataclass (picklable, no lambdas) so DataLoader workers
can use it under the spawn start method. A spec such as ``jpeg:90,50 blur:1,2 mirror``
expands to one perturbation per value; see :func:`parse_spec` and docs/robustness.md.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

from PIL import Image, ImageOps
from torchvision.transforms import functional as TF

from dfx.errors import DfxError


@dataclass(frozen=True)
class Raw:
    """No perturbation: the image as decoded."""

    @property
    def name(self) -> str:
        return "raw"

    def __call__(self, image: Image.Image) -> Image.Image:
        return image


@dataclass(frozen=True)
class JpegCompression:
    """Re-encode in memory as JPEG at one quality factor with 4:4:4 chroma, then decode."""

    quality: int
    """JPEG quality factor, 1 to 100."""

    @property
    def name(self) -> str:
        return f"jpeg:{self.quality}"

    def __call__(self, image: Image.Image) -> Image.Image:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=self.quality, subsampling=0)
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            return decoded.convert("RGB")


@dataclass(frozen=True)
class GaussianBlur:
    """Gaussian blur of standard deviation ``sigma`` pixels (kernel 2·ceil(3σ)+1; σ 0: none)."""

    sigma: float
    """Standard deviation in pixels."""
    kernel: int | None = None
    """Kernel side (odd); None derives it from sigma."""

    @property
    def name(self) -> str:
        if self.kernel is not None:
            return f"blurk:{self.kernel}"
        return f"blur:{_number(self.sigma)}"

    def __call__(self, image: Image.Image) -> Image.Image:
        if self.sigma <= 0:
            return image
        kernel = self.kernel or 2 * math.ceil(3 * self.sigma) + 1
        # Reflection padding needs the half-kernel to be smaller than the image.
        kernel = min(kernel, 2 * (min(image.size) - 1) + 1)
        if kernel < 3:
            return image
        return TF.gaussian_blur(image, [kernel, kernel], [self.sigma, self.sigma])


OFFICIAL_BLUR_SIGMA = 4.0
"""The sigma of the official release's blur test for every kernel size.

It calls ``cv2.GaussianBlur(img, (k, k), cv2.BORDER_DEFAULT)``: the third argument is
sigmaX, and ``cv2.BORDER_DEFAULT`` is 4, so each k×k kernel has sigma 4.
"""


@dataclass(frozen=True)
class Rescale:
    """Resize by a factor, aspect ratio kept: area averaging when shrinking, bilinear when not.

    Area averaging is what the official release's ``cv2.INTER_AREA`` does when shrinking.
    """

    factor: float
    """New side / old side, e.g. 0.5 or 2."""

    @property
    def name(self) -> str:
        return f"resize:{_number(self.factor)}"

    def output_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """The (width, height) an image of ``size`` gets."""
        width, height = size
        return max(1, round(width * self.factor)), max(1, round(height * self.factor))

    def __call__(self, image: Image.Image) -> Image.Image:
        size = self.output_size(image.size)
        shrinking = self.factor < 1
        return image.resize(size, Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR)


@dataclass(frozen=True)
class Rotate:
    """Rotate counter-clockwise about the centre (bilinear, same size, black corners)."""

    degrees: float
    """Angle in degrees."""

    @property
    def name(self) -> str:
        return f"rotate:{_number(self.degrees)}"

    def __call__(self, image: Image.Image) -> Image.Image:
        return image.rotate(self.degrees, resample=Image.Resampling.BILINEAR)


MIRROR_AXES = ("h", "v", "b")
"""Mirror modes: left-right, top-bottom, both (the official release's ``cv2.flip(img, -1)``)."""


@dataclass(frozen=True)
class Mirror:
    """Flip left to right (``h``), top to bottom (``v``) or both (``b``)."""

    axes: str = "h"
    """``h``, ``v`` or ``b``."""

    @property
    def name(self) -> str:
        return "mirror" if self.axes == "h" else f"mirror:{self.axes}"

    def __call__(self, image: Image.Image) -> Image.Image:
        if self.axes in ("h", "b"):
            image = ImageOps.mirror(image)
        if self.axes in ("v", "b"):
            image = ImageOps.flip(image)
        return image


Perturbation = Raw | JpegCompression | GaussianBlur | Rescale | Rotate | Mirror

DEFAULT_QFS: tuple[int, ...] = (90, 80, 70, 60, 50)
"""The paper's JPEG quality factors (Tables 2 and 3)."""

_PAPER_QFS = ",".join(map(str, DEFAULT_QFS))

PRESETS: dict[str, str] = {
    "paper": f"jpeg:{_PAPER_QFS}",
    "official": f"jpeg:{_PAPER_QFS} blurk:3,7,15 resize:0.5,2 mirror:b rotate:45,135",
    "field": "jpeg:100,90,80,70,60,50,40,30 blur:0,1,2,3,4 resize:0.5",
}
"""Named specs: the paper's JPEG grid, the official release's tests, the field's grids."""

KIND_DEFAULTS: dict[str, str] = {
    "jpeg": _PAPER_QFS,
    "blur": "0,1,2,3,4",
    "blurk": "3,7,15",
    "resize": "0.5",
    "rotate": "45,135",
}
"""Values used when a kind is given without any (``jpeg`` means ``jpeg:90,80,70,60,50``)."""

SPEC_HELP = (
    "kinds: jpeg:QF,... (1-100), blur:SIGMA,... (0-20), blurk:KERNEL,... (odd, 1-99), "
    "resize:FACTOR,... (0.05-8), rotate:DEGREES,..., mirror[:h|v|b]; presets: " + ", ".join(PRESETS)
)


def parse_spec(spec: str) -> list[Perturbation]:
    """The perturbations a spec names, in order, duplicates dropped; raw is never included.

    ``spec`` is whitespace-separated ``kind[:v1,v2,...]`` tokens or preset names.
    """
    perturbations: list[Perturbation] = []
    tokens = spec.split()
    if not tokens:
        raise DfxError(f"the perturbation spec is empty; {SPEC_HELP}.")
    for token in tokens:
        if token in PRESETS:
            found = parse_spec(PRESETS[token])
        else:
            found = _parse_token(token)
        perturbations.extend(p for p in found if p not in perturbations)
    return perturbations


def jpeg_grid(qfs: list[int] | tuple[int, ...]) -> list[Perturbation]:
    """JPEG perturbations for quality factors, checked to lie in 1..100."""
    return parse_spec("jpeg:" + ",".join(str(q) for q in qfs)) if qfs else []


def _parse_token(token: str) -> list[Perturbation]:
    kind, _, values = token.partition(":")
    kind = kind.lower()
    if kind == "mirror":
        axes = [text.strip().lower() for text in (values or "h").split(",")]
        unknown = [mode for mode in axes if mode not in MIRROR_AXES]
        if unknown:
            raise DfxError(
                f"perturbation {token!r}: mirror takes h (left-right), v (top-bottom) or b (both)."
            )
        return [Mirror(mode) for mode in axes]
    if kind not in KIND_DEFAULTS:
        raise DfxError(f"unknown perturbation {token!r}; {SPEC_HELP}.")
    texts = (values or KIND_DEFAULTS[kind]).split(",")
    return [_make(kind, text.strip(), token) for text in texts]


def _make(kind: str, text: str, token: str) -> Perturbation:
    try:
        value = float(text)
    except ValueError:
        raise DfxError(f"perturbation {token!r}: {text!r} is not a number; {SPEC_HELP}.") from None
    _check(math.isfinite(value), token, "values are finite numbers")
    if kind == "jpeg":
        _check(value == int(value) and 1 <= value <= 100, token, "a JPEG quality is 1 to 100")
        return JpegCompression(int(value))
    if kind == "blur":
        _check(0 <= value <= 20, token, "a blur sigma is 0 to 20")
        return GaussianBlur(value)
    if kind == "blurk":
        _check(value == int(value) and 1 <= value <= 99 and int(value) % 2, token, "odd 1 to 99")
        return GaussianBlur(OFFICIAL_BLUR_SIGMA, int(value))
    if kind == "resize":
        _check(0.05 <= value <= 8, token, "a resize factor is 0.05 to 8")
        return Rescale(value)
    return Rotate(value)


def _check(ok: bool, token: str, rule: str) -> None:
    if not ok:
        raise DfxError(f"perturbation {token!r} is out of range: {rule}.")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
