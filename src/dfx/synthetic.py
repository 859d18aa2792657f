"""A small simulated data set of generator fingerprints, for offline runs and tests.

This is a simulation. No image written here comes from a GAN or a diffusion model: every
image is a crop of one of the two photographs bundled with scikit-learn, or a procedural
texture, and the two "fake" classes carry hand-made imitations of the traces that real
generators leave:

* ``gan`` (``toygan-a``, ``toygan-b``): the content is downsampled 2x or 4x and upsampled
  again by fixed stride-2 transposed convolutions whose uneven kernels leave the periodic
  checkerboard of GAN up-convolutions.
* ``dm`` (``toydm-a``, ``toydm-b``): the content passes through an 8x latent bottleneck and
  a fixed, smooth decoder that restores the lost detail only through a low-pass filter, and
  a faint noise residue with a fixed spectrum is added: a stand-in for the traces of latent
  diffusion decoders.
* ``real`` (``photo``, ``texture``): the same pool of content, only cropped, flipped and
  rescaled.

Every class draws its content from the same pool, so the classes differ by the trace and
not by what the images show. The traces are a few grey levels strong, so JPEG compression
weakens them, as it weakens real ones. Each generator's kernels and noise spectrum are
constants derived from its name alone, so data sets written with different seeds share the
same fingerprints. A model that does well here has learned these toy fingerprints and
nothing more: the data set exists so that the pipeline can run and be tested offline.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

GENERATORS: dict[str, tuple[str, ...]] = {
    "dm": ("toydm-a", "toydm-b"),
    "gan": ("toygan-a", "toygan-b"),
    "real": ("photo", "texture"),
}
"""Generators (sub-folder names) of each class, in the order they are written."""

_MIN_SIZE = 32
_MAX_SIZE = 512

# Working images are a multiple of the 8x latent stride, then cropped to the asked size.
_LATENT_STRIDE = 8

# Trace strengths, in units of the [0, 1] intensity range. They are tuned so that a tiny CNN
# learns the classes at 32-64 px while JPEG at quality 50 clearly erodes the traces.
_GAN_TAP_JITTER = 0.012  # per-tap deviation of the transposed-convolution kernels
_DM_KERNEL_JITTER = 0.004  # per-tap deviation of the latent decoder's upsampling kernels
_DM_NOISE_STD = 0.012  # standard deviation of the fixed-spectrum noise residue
_DM_NOISE_PEAK_WIDTH = 0.025  # width of the residue's spectral peaks, in cycles per pixel

_PHOTO_FILTERS = (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC, Image.Resampling.LANCZOS)


@dataclass
class SyntheticSummary:
    """What :func:`write_dataset` wrote."""

    root: Path
    """Where the data set was written."""
    counts: dict[str, dict[str, int]]
    """Class -> generator -> number of images."""
    image_size: int
    """Side of every (square) image, in pixels."""
    seed: int
    """The seed the images were drawn with."""


def write_dataset(
    root: str | Path,
    *,
    per_generator: int = 100,
    image_size: int = 64,
    seed: int = 0,
    on_image: Callable[[], None] | None = None,
) -> SyntheticSummary:
    """Write root/<class>/<generator>/<class>-<generator>-<index:05d>.png for every generator.

    Every image is an RGB, 8-bit PNG of ``image_size`` x ``image_size`` pixels. The same
    ``seed`` gives byte-identical files; image ``index`` of a generator does not depend on
    ``per_generator``. Existing files with the same names are overwritten. ``on_image`` is
    called once after each image is written. Raises ValueError for a ``per_generator`` below
    1, an ``image_size`` outside 32-512 or a negative ``seed``.
    """
    _check_int("per_generator", per_generator, 1, None)
    _check_int("image_size", image_size, _MIN_SIZE, _MAX_SIZE)
    _check_int("seed", seed, 0, None)
    root = Path(root)
    counts: dict[str, dict[str, int]] = {}
    for label, generators in GENERATORS.items():
        counts[label] = {}
        for generator in generators:
            folder = root / label / generator
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(per_generator):
                _save_png(
                    _pixels(label, generator, index, seed, image_size),
                    folder / f"{label}-{generator}-{index:05d}.png",
                )
                if on_image is not None:
                    on_image()
            counts[label][generator] = per_generator
    return SyntheticSummary(root=root, counts=counts, image_size=image_size, seed=seed)


def half_composites(
    count: int, *, image_size: int = 64, seed: int = 7
) -> tuple[list[Image.Image], list[int]]:
    """``count`` images whose left or right half is GAN-class, the other half real.

    For checking where an explanation puts its mass: the k-th composite joins the k-th GAN
    and k-th real image of a :func:`write_dataset` set with ``ceil(count / 2)`` per
    generator (in its files' sorted order); returns the composites with the side of each
    one's GAN half (0 left, 1 right; alternating, the left first).
    """
    _check_int("count", count, 1, None)
    _check_int("image_size", image_size, _MIN_SIZE, _MAX_SIZE)
    per_generator = -(-count // 2)

    def drawn(label: str) -> list[tuple[str, int]]:
        every = [(g, i) for g in sorted(GENERATORS[label]) for i in range(per_generator)]
        return every[:count]

    half = image_size // 2
    composites, gan_sides = [], []
    for number, (gan, real) in enumerate(zip(drawn("gan"), drawn("real"))):
        side = number % 2
        columns = slice(0, half) if side == 0 else slice(half, None)
        pixels = _pixels("real", *real, seed, image_size)
        pixels[:, columns] = _pixels("gan", *gan, seed, image_size)[:, columns]
        composites.append(Image.fromarray(pixels))
        gan_sides.append(side)
    return composites, gan_sides


def share_on_gan_half(heatmap: np.ndarray, gan_side: int) -> float:
    """The share of a map's mass on a composite's GAN half (0 for a blank map)."""
    middle = heatmap.shape[1] // 2
    half = heatmap[:, :middle] if gan_side == 0 else heatmap[:, middle:]
    total = float(heatmap.sum())
    return float(half.sum()) / total if total > 0 else 0.0


def _check_int(name: str, value: object, low: int, high: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bounds = f"at least {low}" if high is None else f"between {low} and {high}"
        raise ValueError(f"{name} must be {bounds}, got {value}")


def _stable_int(text: str) -> int:
    # Python's hash() is salted per process; a digest gives the same number everywhere.
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


def _render(
    label: str, generator: str, index: int, rng: np.random.Generator, size: int
) -> np.ndarray:
    """One image as floats in [0, 1], shape (size, size, 3)."""
    if label == "real":
        return _photo_crop(rng, size) if generator == "photo" else _texture(rng, size)
    # Fakes alternate photo and texture content, so their mix matches the real class exactly.
    source = _photo_crop(rng, size) if index % 2 == 0 else _texture(rng, size)
    if label == "gan":
        return _gan_trace(source, generator, rng)
    return _dm_trace(source, generator, rng)


def _pixels(label: str, generator: str, index: int, seed: int, image_size: int) -> np.ndarray:
    """Image ``index`` of a generator as 8-bit RGB, (image_size, image_size, 3)."""
    # One generator per image: image ``index`` is the same whatever per_generator is.
    rng = np.random.default_rng([seed, _stable_int(f"image/{label}/{generator}"), index])
    work_size = -(-image_size // _LATENT_STRIDE) * _LATENT_STRIDE
    pixels = _render(label, generator, index, rng, work_size)[:image_size, :image_size]
    return np.rint(np.clip(pixels, 0.0, 1.0) * 255.0).astype(np.uint8)


def _save_png(pixels: np.ndarray, path: Path) -> None:
    # Pillow writes no timestamp into PNGs, so equal pixels give equal bytes.
    Image.fromarray(np.ascontiguousarray(pixels), mode="RGB").save(path, format="PNG")


# --- content: the pool every class draws from -------------------------------------------------


@functools.lru_cache(maxsize=1)
def _photos() -> tuple[Image.Image, ...]:
    """The photographs bundled with scikit-learn (china.jpg, flower.jpg), decoded once."""
    # Importing sklearn.datasets takes about a second, longer than writing a small data set,
    # so read the bundled files directly; the loader is the fallback if they ever move.
    spec = importlib.util.find_spec("sklearn")
    folders = [Path(p) / "datasets" / "images" for p in (spec.submodule_search_locations or [])]
    files = sorted(f for folder in folders if folder.is_dir() for f in folder.glob("*.jpg"))
    if files:
        photos = []
        for file in files:
            with Image.open(file) as image:
                photos.append(image.convert("RGB"))
        return tuple(photos)
    from sklearn.datasets import load_sample_images

    return tuple(Image.fromarray(image).convert("RGB") for image in load_sample_images().images)


def _photo_crop(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random crop of a bundled photo, rescaled to size x size and maybe mirrored."""
    photos = _photos()
    photo = photos[rng.integers(len(photos))]
    width, height = photo.size
    # Crops from 0.7x to 3x the output side: some are zoomed in (soft), most zoomed out (sharp),
    # so sharpness alone does not tell real from fake. Non-integer factors also smear the
    # 8x8 JPEG grid of the source files.
    zoom = float(np.exp(rng.uniform(np.log(0.7), np.log(3.0))))
    side = int(min(max(round(size * zoom), 8), width, height))
    left = int(rng.integers(0, width - side + 1))
    top = int(rng.integers(0, height - side + 1))
    resample = _PHOTO_FILTERS[rng.integers(len(_PHOTO_FILTERS))]
    crop = photo.resize((size, size), resample=resample, box=(left, top, left + side, top + side))
    pixels = np.asarray(crop, dtype=np.float64) / 255.0
    return pixels[:, ::-1] if rng.random() < 0.5 else pixels


def _fractal_noise(rng: np.random.Generator, size: int, count: int, beta: float) -> np.ndarray:
    """``count`` fields of 1/f^beta noise, each with zero mean and unit std: (count, size, size)."""
    freq = np.hypot(np.fft.fftfreq(size)[:, None], np.fft.rfftfreq(size)[None, :])
    gain = np.maximum(freq, 1.0 / size) ** -beta
    gain[0, 0] = 0.0
    white = rng.standard_normal((count, size, size))
    fields = np.fft.irfft2(np.fft.rfft2(white) * gain, s=(size, size))
    return fields / fields.std(axis=(1, 2), keepdims=True)


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A procedural texture: coloured fractal clouds, warped waves or flat-shaded cells."""
    kind = rng.integers(3)
    beta = rng.uniform(0.8, 2.0)
    mean = rng.uniform(0.2, 0.8, 3)
    if kind == 0:
        fields = _fractal_noise(rng, size, 4, beta)
        contrast = rng.uniform(0.08, 0.22)
        image = mean + contrast * (fields[0, :, :, None] + 0.35 * np.moveaxis(fields[1:], 0, -1))
    elif kind == 1:
        fields = _fractal_noise(rng, size, 4, beta)
        grid = np.arange(size) / size
        waves = np.zeros((size, size))
        for _ in range(int(rng.integers(1, 4))):
            angle = rng.uniform(0.0, np.pi)
            cycles = rng.uniform(1.5, 10.0)  # per image side, so the look is size-independent
            phase = (np.cos(angle) * grid[None, :] + np.sin(angle) * grid[:, None]) * cycles
            waves += np.cos(2 * np.pi * phase + rng.uniform(0, 2 * np.pi) + fields[0])
        level = 0.5 + 0.5 * np.tanh(rng.uniform(0.5, 4.0) * waves)
        other = np.clip(mean + rng.normal(0.0, 0.25, 3), 0.05, 0.95)
        image = mean + (other - mean) * level[:, :, None]
        image = image + 0.03 * np.moveaxis(fields[1:], 0, -1)
    else:
        fields = _fractal_noise(rng, size, 1, beta)
        centres = rng.uniform(0.0, size, (int(rng.integers(6, 25)), 2))
        colours = np.clip(mean + rng.normal(0.0, 0.15, (len(centres), 3)), 0.0, 1.0)
        rows, cols = np.arange(size)[:, None] + 0.5, np.arange(size)[None, :] + 0.5
        # Running nearest-centre search: memory stays O(size^2) even with many cells.
        nearest = np.zeros((size, size), dtype=np.intp)
        best = np.full((size, size), np.inf)
        for number, (row, col) in enumerate(centres):
            dist = (rows - row) ** 2 + (cols - col) ** 2
            closer = dist < best
            best = np.where(closer, dist, best)
            nearest[closer] = number
        image = colours[nearest] + 0.04 * fields[0, :, :, None]
    return np.clip(image, 0.0, 1.0)


# --- fingerprints: constants per generator, independent of the data seed ----------------------


def _fingerprint_rng(generator: str) -> np.random.Generator:
    return np.random.default_rng(_stable_int(f"fingerprint/{generator}"))


def _linear_phases(stride: int) -> np.ndarray:
    """Polyphase taps of linear interpolation by ``stride``: (stride, stride, 3, 3).

    Entry [a, b, d, e] weights input pixel (i + d - 1, j + e - 1) in output pixel
    (stride * i + a, stride * j + b), with output pixels centred between input ones.
    """
    offsets = (np.arange(stride) + 0.5) / stride - 0.5
    taps = np.maximum(0.0, 1.0 - np.abs(offsets[:, None] - (np.arange(3) - 1)[None, :]))
    return taps[:, None, :, None] * taps[None, :, None, :]


def _jittered_kernel(rng: np.random.Generator, stride: int, jitter: float) -> np.ndarray:
    """Linear-interpolation phases plus fixed per-channel jitter: (stride, stride, 3, 3, 3).

    The jitter gives each output phase a slightly different gain and shape, which is what
    makes a learned up-convolution leave a pattern with the period of its stride.
    """
    base = np.repeat(_linear_phases(stride)[..., None], 3, axis=-1)
    kernel = base + rng.normal(0.0, jitter, base.shape)
    # Keep the average gain at 1 per channel so brightness and colour are unchanged on average.
    return kernel / kernel.sum(axis=(2, 3)).mean(axis=(0, 1))


def _upsample(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Transposed convolution (depthwise) in polyphase form: (h, w, 3) -> (s*h, s*w, 3).

    ``kernel`` is (s, s, 3, 3, channels) as from :func:`_jittered_kernel`: each output phase
    is a 3x3 filter of the input, which is a stride-s transposed convolution rearranged.
    """
    stride = kernel.shape[0]
    height, width, channels = image.shape
    padded = np.pad(image, ((1, 1), (1, 1), (0, 0)), mode="edge")  # zeros would darken borders
    out = np.zeros((height, width, stride, stride, channels))
    for d in range(3):
        for e in range(3):
            out += padded[d : d + height, e : e + width, None, None, :] * kernel[:, :, d, e, :]
    return out.transpose(0, 2, 1, 3, 4).reshape(height * stride, width * stride, channels)


def _area_down(image: np.ndarray, factor: int) -> np.ndarray:
    height, width, channels = image.shape
    blocks = image.reshape(height // factor, factor, width // factor, factor, channels)
    return blocks.mean(axis=(1, 3))


@functools.cache
def _gan_kernel(generator: str) -> np.ndarray:
    return _jittered_kernel(_fingerprint_rng(generator), 2, _GAN_TAP_JITTER)


def _gan_trace(source: np.ndarray, generator: str, rng: np.random.Generator) -> np.ndarray:
    """Downsample 2x or 4x, then upsample with the generator's stride-2 kernel per factor 2."""
    steps = int(rng.integers(1, 3))
    image = _area_down(source, 2**steps)
    kernel = _gan_kernel(generator)
    for _ in range(steps):
        image = _upsample(image, kernel)
    return image


@dataclass(frozen=True)
class _DmPrint:
    """The constants of one toy latent-diffusion decoder."""

    kernel: np.ndarray
    """Upsampling kernel from the 8x latent, (8, 8, 3, 3, 3)."""
    detail: np.ndarray
    """Side-tap weight a of the [a, 1 - 2a, a] low-pass applied to restored detail, per channel."""
    peaks: np.ndarray
    """Centres of the noise residue's spectral peaks, (count, 2) in cycles per pixel."""
    colour: np.ndarray
    """Per-channel amplitude of the noise residue, (3,)."""


@functools.cache
def _dm_print(generator: str) -> _DmPrint:
    rng = _fingerprint_rng(generator)
    kernel = _jittered_kernel(rng, _LATENT_STRIDE, _DM_KERNEL_JITTER)
    detail = rng.uniform(0.17, 0.24, 3)
    radius = rng.uniform(0.12, 0.3, 2)
    angle = rng.uniform(0.0, np.pi / 2, 2)
    peaks = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    colour = 1.0 + 0.3 * rng.standard_normal(3)
    return _DmPrint(kernel=kernel, detail=detail, peaks=peaks, colour=colour)


@functools.lru_cache(maxsize=32)
def _dm_noise_gain(generator: str, size: int) -> np.ndarray:
    """Amplitude spectrum of the residue on the rfft2 grid, scaled to unit output variance."""
    peaks = _dm_print(generator).peaks
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.fftfreq(size)[None, :]
    gain = np.zeros((size, size))
    # Mirror each peak into all four quadrants so the spectrum is that of a real signal.
    for py, px in peaks:
        for sy in (-1, 1):
            for sx in (-1, 1):
                dist2 = (fy - sy * py) ** 2 + (fx - sx * px) ** 2
                gain += np.exp(-dist2 / (2 * _DM_NOISE_PEAK_WIDTH**2))
    # With orthonormal FFTs, white noise filtered by `gain` has variance mean(gain^2).
    gain /= np.sqrt(np.mean(gain**2))
    return gain[:, : size // 2 + 1]


def _smooth3(image: np.ndarray, side: np.ndarray) -> np.ndarray:
    """Separable [a, 1 - 2a, a] low-pass with per-channel a, edges replicated."""
    for axis in (0, 1):
        padded = np.pad(image, [(1, 1) if k == axis else (0, 0) for k in range(3)], mode="edge")
        before = padded[:-2] if axis == 0 else padded[:, :-2]
        middle = padded[1:-1] if axis == 0 else padded[:, 1:-1]
        after = padded[2:] if axis == 0 else padded[:, 2:]
        image = side * (before + after) + (1.0 - 2.0 * side) * middle
    return image


def _dm_trace(source: np.ndarray, generator: str, rng: np.random.Generator) -> np.ndarray:
    """8x latent bottleneck, smooth decoder with low-passed detail, fixed-spectrum residue."""
    fingerprint = _dm_print(generator)
    size = source.shape[0]
    decoded = _upsample(_area_down(source, _LATENT_STRIDE), fingerprint.kernel)
    # Decoders do not paint a blurry image: they restore the detail the latent lost, but only
    # up to their own bandwidth. Restoring it through a low-pass keeps content and brightness
    # like the source while the top octave (and the decoder's period-8 seams there) carries
    # the trace.
    image = decoded + _smooth3(source - decoded, fingerprint.detail)
    white = rng.standard_normal((size, size))
    spectrum = np.fft.rfft2(white, norm="ortho") * _dm_noise_gain(generator, size)
    residue = np.fft.irfft2(spectrum, s=(size, size), norm="ortho")
    return image + _DM_NOISE_STD * residue[:, :, None] * fingerprint.colour
