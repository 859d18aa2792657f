"""Perturbation specs, what each perturbation does, and the decode-once variant data set."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from dfx.data.dataset import ImageDataset, VariantDataset
from dfx.data.perturbations import (
    OFFICIAL_BLUR_SIGMA,
    GaussianBlur,
    JpegCompression,
    Mirror,
    Raw,
    Rescale,
    Rotate,
    jpeg_grid,
    parse_spec,
)
from dfx.data.transforms import Preprocessing
from dfx.errors import DfxError


def test_spec_expands_kinds_values_and_presets():
    assert parse_spec("jpeg:90,50 blur:1,2 resize:0.5 rotate:45 mirror") == [
        JpegCompression(90),
        JpegCompression(50),
        GaussianBlur(1.0),
        GaussianBlur(2.0),
        Rescale(0.5),
        Rotate(45.0),
        Mirror(),
    ]
    assert [p.name for p in parse_spec("official")] == [
        "jpeg:90",
        "jpeg:80",
        "jpeg:70",
        "jpeg:60",
        "jpeg:50",
        "blurk:3",
        "blurk:7",
        "blurk:15",
        "resize:0.5",
        "resize:2",
        "mirror:b",
        "rotate:45",
        "rotate:135",
    ]
    field = parse_spec("field")
    assert [p.quality for p in field if isinstance(p, JpegCompression)] == list(range(100, 29, -10))
    assert [p.sigma for p in field if isinstance(p, GaussianBlur)] == [0, 1, 2, 3, 4]
    assert parse_spec("jpeg") == jpeg_grid([90, 80, 70, 60, 50])
    # Every kind named without values expands to its documented default grid.
    assert [p.name for p in parse_spec("blur blurk resize rotate")] == [
        "blur:0",
        "blur:1",
        "blur:2",
        "blur:3",
        "blur:4",
        "blurk:3",
        "blurk:7",
        "blurk:15",
        "resize:0.5",
        "rotate:45",
        "rotate:135",
    ]
    assert parse_spec("jpeg:50 jpeg:50,40") == [JpegCompression(50), JpegCompression(40)]


def test_official_blur_kernels_have_sigma_4_and_mirror_modes():
    assert parse_spec("blurk:7") == [GaussianBlur(OFFICIAL_BLUR_SIGMA, 7)]
    assert OFFICIAL_BLUR_SIGMA == 4.0
    assert parse_spec("mirror mirror:v,b") == [Mirror("h"), Mirror("v"), Mirror("b")]


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("", "empty"),
        ("sharpen:2", "unknown perturbation 'sharpen:2'"),
        ("jpeg:0", "1 to 100"),
        ("jpeg:101", "1 to 100"),
        ("jpeg:9x", "not a number"),
        ("blurk:4", "odd"),
        ("resize:0", "0.05 to 8"),
        ("mirror:x", "mirror takes h"),
        ("jpeg:nan", "finite"),
        ("blurk:inf", "finite"),
        ("rotate:-inf", "finite"),
    ],
)
def test_bad_specs_fail_with_one_sentence(spec, fragment):
    with pytest.raises(DfxError, match=fragment) as error:
        parse_spec(spec)
    assert "\n" not in str(error.value)


def test_each_perturbation_changes_the_image_as_named():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))
    pixels = np.asarray(image, dtype=float)
    assert Raw()(image) is image
    assert np.array_equal(np.asarray(Mirror()(image)), pixels[:, ::-1].astype(np.uint8))
    assert np.array_equal(np.asarray(Mirror("v")(image)), pixels[::-1].astype(np.uint8))
    assert np.array_equal(np.asarray(Mirror("b")(image)), pixels[::-1, ::-1].astype(np.uint8))
    halved = np.asarray(Rescale(0.5)(image), dtype=float)  # area averaging of 2×2 blocks
    assert halved[0, 0] == pytest.approx(pixels[:2, :2].mean(axis=(0, 1)), abs=1)
    tiny = Image.new("RGB", (4, 4), (9, 9, 9))
    assert GaussianBlur(OFFICIAL_BLUR_SIGMA, 15)(tiny).size == (4, 4)  # kernel clipped
    # Clipped to the largest kernel reflection padding allows: 7 on a 4-pixel side, not less.
    noise = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
    expected = np.asarray(TF.gaussian_blur(noise, [7, 7], [OFFICIAL_BLUR_SIGMA] * 2))
    assert np.array_equal(np.asarray(GaussianBlur(OFFICIAL_BLUR_SIGMA, 15)(noise)), expected)
    assert Rescale(0.5)(image).size == (30, 20) and Rescale(2)(image).size == (120, 80)
    assert Rotate(135)(image).size == image.size
    blurred = np.asarray(GaussianBlur(2.0)(image), dtype=float)
    assert blurred.std() < pixels.std() / 2  # noise loses most of its variance
    assert GaussianBlur(0.0)(image) is image
    compressed = np.asarray(JpegCompression(30)(image), dtype=float)
    assert compressed.shape == pixels.shape and np.abs(compressed - pixels).mean() > 5


def test_perturbations_pickle_for_spawned_workers():
    perturbations = parse_spec("official field")
    assert pickle.loads(pickle.dumps(perturbations)) == perturbations


def test_variant_dataset_decodes_once_and_matches_single_variants(tmp_path):
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    preprocessing = Preprocessing(32)
    variants = [Raw(), JpegCompression(50), Mirror()]
    dataset = VariantDataset(
        [tmp_path / "a.png", tmp_path / "bad.png"], None, preprocessing, variants
    )
    stack, target, index = dataset[0]
    assert stack.shape == (3, 3, 32, 32) and target == -1 and index == 0
    for position, perturbation in enumerate(variants):
        single = ImageDataset([tmp_path / "a.png"], None, preprocessing, perturbation)[0][0]
        assert torch.equal(stack[position], single)
    assert dataset[1][0] is None and dataset[1][1].source.endswith("bad.png")
    assert pickle.loads(pickle.dumps(dataset)).perturbations == variants


def test_enlarging_perturbations_respect_the_pixel_limit(tmp_path):
    path = tmp_path / "photo.png"
    Image.new("RGB", (40, 30)).save(path)
    preprocessing = Preprocessing(resize=16)
    variants = [Raw(), Rescale(2.0)]
    allowed = VariantDataset([path], None, preprocessing, variants, max_pixels=40 * 30 * 4)
    assert allowed[0][0].shape == (2, 3, 16, 16)
    limited = VariantDataset([path], None, preprocessing, variants, max_pixels=40 * 30 * 4 - 1)
    tensor, failure, _ = limited[0]
    assert tensor is None and "too many pixels after resize:2" in failure.reason
