"""Tests for the simulated data set: layout, determinism, and that the traces are really there."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dfx.synthetic import (
    GENERATORS,
    SyntheticSummary,
    half_composites,
    share_on_gan_half,
    write_dataset,
)

SIZE = 64
PER_GENERATOR = 6


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> SyntheticSummary:
    return write_dataset(
        tmp_path_factory.mktemp("synthetic"), per_generator=PER_GENERATOR, image_size=SIZE, seed=0
    )


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def _images(root: Path, label: str, generator: str = "*") -> list[np.ndarray]:
    paths = sorted(root.glob(f"{label}/{generator}/*.png"))
    return [np.asarray(Image.open(p), dtype=np.float64) / 255.0 for p in paths]


def _power(image: np.ndarray) -> np.ndarray:
    """Power spectrum summed over channels, mean removed (no DC term)."""
    centred = image - image.mean(axis=(0, 1))
    return (np.abs(np.fft.fft2(centred, axes=(0, 1))) ** 2).sum(axis=-1)


def _nyquist_share(image: np.ndarray) -> float:
    """Share of the energy in the three period-2 frequencies: the checkerboard's signature."""
    power = _power(image)
    half = image.shape[0] // 2
    return float((power[half, 0] + power[0, half] + power[half, half]) / power.sum())


def _high_share(image: np.ndarray) -> float:
    """Share of the energy above 0.375 cycles per pixel (the top of the spectrum)."""
    power = _power(image)
    freq = np.fft.fftfreq(image.shape[0])
    radius = np.hypot(freq[:, None], freq[None, :])
    return float(power[radius > 0.375].sum() / power.sum())


def _checkerboard_signature(images: list[np.ndarray]) -> np.ndarray:
    """Per channel, the three period-2 components relative to brightness, averaged over images.

    A checkerboard made by uneven up-convolution gains scales with brightness and keeps its
    sign from image to image, so this average converges to a constant of the generator.
    """
    sign = (-1.0) ** np.arange(images[0].shape[0])
    patterns = (sign[:, None], sign[None, :], sign[:, None] * sign[None, :])
    rows = [
        [(img[:, :, c] * p).mean() / img[:, :, c].mean() for p in patterns for c in range(3)]
        for img in images
    ]
    return np.mean(rows, axis=0)


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    pixels = np.rint(image * 255.0).astype(np.uint8)
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality, subsampling=0)
    return np.asarray(Image.open(buffer), dtype=np.float64) / 255.0


def test_layout_counts_and_format(dataset: SyntheticSummary) -> None:
    root = dataset.root
    assert dataset.image_size == SIZE and dataset.seed == 0
    assert dataset.counts == {
        label: {generator: PER_GENERATOR for generator in generators}
        for label, generators in GENERATORS.items()
    }
    for label, generators in GENERATORS.items():
        assert sorted(p.name for p in (root / label).iterdir()) == sorted(generators)
        for generator in generators:
            names = sorted(p.name for p in (root / label / generator).iterdir())
            assert names == [f"{label}-{generator}-{i:05d}.png" for i in range(PER_GENERATOR)]
    for path in root.rglob("*.png"):
        with Image.open(path) as image:
            assert (image.format, image.mode, image.size) == ("PNG", "RGB", (SIZE, SIZE))


def test_progress_callback_and_odd_size(tmp_path: Path) -> None:
    calls = []
    summary = write_dataset(
        tmp_path, per_generator=2, image_size=37, on_image=lambda: calls.append(1)
    )
    assert len(calls) == 12 == sum(sum(g.values()) for g in summary.counts.values())
    for path in tmp_path.rglob("*.png"):
        with Image.open(path) as image:
            assert image.size == (37, 37)


def test_same_seed_same_bytes_and_overwrite(tmp_path: Path) -> None:
    first = write_dataset(tmp_path / "a", per_generator=2, image_size=32, seed=3).root
    # Writing another seed first, into the same folder, must leave no trace after the rewrite.
    write_dataset(tmp_path / "b", per_generator=2, image_size=32, seed=4)
    second = write_dataset(tmp_path / "b", per_generator=2, image_size=32, seed=3).root
    assert _files(first) == _files(second)


def test_image_does_not_depend_on_count(tmp_path: Path) -> None:
    few = _files(write_dataset(tmp_path / "few", per_generator=1, image_size=32).root)
    more = _files(write_dataset(tmp_path / "more", per_generator=3, image_size=32).root)
    assert few.items() <= more.items()


def test_different_seed_different_images(tmp_path: Path) -> None:
    one = _files(write_dataset(tmp_path / "a", per_generator=2, image_size=32, seed=0).root)
    two = _files(write_dataset(tmp_path / "b", per_generator=2, image_size=32, seed=1).root)
    assert one.keys() == two.keys()
    assert all(one[name] != two[name] for name in one)


def test_gan_has_period_two_trace(dataset: SyntheticSummary) -> None:
    gan = [_nyquist_share(img) for img in _images(dataset.root, "gan")]
    real = [_nyquist_share(img) for img in _images(dataset.root, "real")]
    dm = [_nyquist_share(img) for img in _images(dataset.root, "dm")]
    # Natural content has almost nothing in 3 of 4096 frequencies; the checkerboard puts a
    # visible share there.
    assert np.median(gan) > 20 * np.median(real)
    assert np.median(gan) > 5 * np.median(dm)


def test_dm_is_smoother_at_high_frequencies(dataset: SyntheticSummary) -> None:
    dm = [_high_share(img) for img in _images(dataset.root, "dm")]
    real = [_high_share(img) for img in _images(dataset.root, "real")]
    # Medians: a few flat images (sky, plain texture) have erratic shares either way.
    assert np.median(dm) < 0.6 * np.median(real)


def test_traces_weaken_under_jpeg(dataset: SyntheticSummary) -> None:
    gan = _images(dataset.root, "gan")
    raw = np.median([_nyquist_share(img) for img in gan])
    q90 = np.median([_nyquist_share(_jpeg(img, 90)) for img in gan])
    q50 = np.median([_nyquist_share(_jpeg(img, 50)) for img in gan])
    assert raw >= q90 > 5 * q50


def test_fingerprints_fixed_per_generator(dataset: SyntheticSummary, tmp_path: Path) -> None:
    other = write_dataset(tmp_path, per_generator=PER_GENERATOR, image_size=SIZE, seed=1).root
    sig = {
        (seed, gen): _checkerboard_signature(_images(root, "gan", gen))
        for seed, root in ((0, dataset.root), (1, other))
        for gen in GENERATORS["gan"]
    }
    a, b = GENERATORS["gan"]
    same_a = np.corrcoef(sig[0, a], sig[1, a])[0, 1]
    same_b = np.corrcoef(sig[0, b], sig[1, b])[0, 1]
    cross = np.corrcoef(sig[0, a], sig[1, b])[0, 1]
    # Different seeds, different content, same kernels: the same generator's pattern recurs,
    # and it is not simply the pattern every generator makes.
    assert same_a > 0.9 and same_b > 0.9
    assert cross < min(same_a, same_b) - 0.1


def test_colour_statistics_do_not_give_the_class_away(dataset: SyntheticSummary) -> None:
    means = {
        label: np.mean([img.mean() for img in _images(dataset.root, label)]) for label in GENERATORS
    }
    # Same content pool and brightness-preserving traces: class means are close (the spread of
    # single images' means is about 0.2, so 0.1 over 12 images is generous yet catches a
    # systematic shift).
    assert max(means.values()) - min(means.values()) < 0.1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"per_generator": 0},
        {"per_generator": -1},
        {"per_generator": 2.5},
        {"image_size": 31},
        {"image_size": 513},
        {"image_size": True},
        {"image_size": 64.0},
        {"seed": -1},
        {"seed": "0"},
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        write_dataset(tmp_path, **kwargs)  # type: ignore[arg-type]
    assert not any(tmp_path.iterdir())


def test_half_composites_take_each_half_from_its_class(tmp_path):
    images, sides = half_composites(3, image_size=32, seed=1)
    assert sides == [0, 1, 0] and all(image.size == (32, 32) for image in images)
    write_dataset(tmp_path, per_generator=2, image_size=32, seed=1)  # the images they join
    gans = sorted((tmp_path / "gan").rglob("*.png"))
    reals = sorted((tmp_path / "real").rglob("*.png"))
    for image, side, gan, real in zip(images, sides, gans, reals):
        pixels = np.asarray(image)
        gan_half, real_half = (slice(0, 16), slice(16, 32))[:: 1 if side == 0 else -1]
        assert (pixels[:, gan_half] == np.asarray(Image.open(gan))[:, gan_half]).all()
        assert (pixels[:, real_half] == np.asarray(Image.open(real))[:, real_half]).all()


def test_share_on_gan_half_counts_the_mass_on_that_half():
    heatmap = np.array([[3.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    assert share_on_gan_half(heatmap, 0) == pytest.approx(0.8)
    assert share_on_gan_half(heatmap, 1) == pytest.approx(0.2)
    assert share_on_gan_half(np.zeros((2, 2), np.float32), 0) == 0.0  # blank: no share
