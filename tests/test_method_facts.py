"""The method's fixed facts, each tested where it takes effect.

Every test here guards one fact that a plausible slip would break silently: the loss weights
the trainers hand to their loss, the chroma sampling of the JPEG bytes, the 90:10 share of
the base models' sets, roles that survive a new Python process, the directions of rotation
and EXIF orientation, the blur kernel, partial transparency, the class order of the stacked
features. docs/testing.md lists the fault each test catches.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, JpegImagePlugin

from dfx.classes import CLASSES
from dfx.data.decoding import load_rgb
from dfx.data.manifest import ROLES, make_manifest, read_manifest
from dfx.data.perturbations import GaussianBlur, JpegCompression, Rotate, parse_spec

SUBPROCESS_TIMEOUT = 120
"""Seconds a child Python process may take before the test fails instead of hanging."""


# --- loss weights: w_c = 1 / (training images of class c), where the loss is computed ---


class LossSpy:
    """Records the class weights every cross-entropy call in training receives."""

    def __init__(self, monkeypatch):
        self.weights: list[torch.Tensor | None] = []
        real = torch.nn.functional.cross_entropy

        def spy(*args, **kwargs):
            weight = kwargs.get("weight", args[2] if len(args) > 2 else None)
            self.weights.append(None if weight is None else weight.detach().cpu().clone())
            return real(*args, **kwargs)

        monkeypatch.setattr(torch.nn.functional, "cross_entropy", spy)

    def assert_inverse_counts(self, counts: dict) -> None:
        expected = torch.tensor([1.0 / counts[f"train_{name}"] for name in CLASSES])
        assert self.weights, "training computed no loss"
        for weight in self.weights:
            assert weight is not None, "the loss was computed without class weights"
            assert torch.allclose(weight, expected, rtol=1e-6)


def unbalanced_manifest(manifest_path: Path, keep: dict[str, int]):
    """The shared manifest with each class cut to ``keep[class]`` images per role."""
    manifest = read_manifest(manifest_path)
    rows = []
    for role in ROLES:
        for name in CLASSES:
            rows += [row for row in manifest.select(role) if row.label == name][: keep[name]]
    return dataclasses.replace(manifest, rows=sorted(rows, key=lambda row: row.path))


def test_fusion_training_weights_its_loss_by_inverse_class_counts(
    manifest_path, tmp_path, monkeypatch
):
    from dfx.engine.base_training import train_base
    from dfx.engine.configs import BaseTrainConfig, FusionTrainConfig
    from dfx.engine.fusion_training import train_fusion

    manifest = unbalanced_manifest(manifest_path, {"dm": 60, "gan": 20, "real": 8})
    base_config = BaseTrainConfig(
        backbone="tiny", weights="none", image_size=32, epochs=1, device="cpu", workers=0
    )
    base = {
        name: train_base(manifest, name, base_config, out=tmp_path / f"{name}.pt").path
        for name in CLASSES
    }
    spy = LossSpy(monkeypatch)
    config = FusionTrainConfig(epochs=2, lr=1e-3, device="cpu", workers=0)
    result = train_fusion(manifest, base, config, out=tmp_path / "model.pt")
    assert result.counts["train_dm"] > 3 * result.counts["train_real"]  # really unbalanced
    spy.assert_inverse_counts(result.counts)
    assert result.to_dict()["counts"] == result.counts  # what train-fusion --json reports
    # The validation hold-out is drawn class by class: 20% of each class's fusion images.
    fusion = {name: sum(row.label == name for row in manifest.select("fusion")) for name in CLASSES}
    held = {name: round(config.val_fraction * count) for name, count in fusion.items()}
    assert fusion == {"dm": 60, "gan": 20, "real": 8} and held == {"dm": 12, "gan": 4, "real": 2}
    assert {name: result.counts[f"train_{name}"] for name in CLASSES} == {
        name: fusion[name] - held[name] for name in CLASSES
    }


def test_baseline_training_weights_its_loss_by_inverse_class_counts(
    manifest_path, tmp_path, monkeypatch
):
    from dfx.engine.baseline_training import train_baseline
    from dfx.engine.configs import BaselineTrainConfig

    manifest = unbalanced_manifest(manifest_path, {"dm": 60, "gan": 20, "real": 8})
    spy = LossSpy(monkeypatch)
    config = BaselineTrainConfig(
        backbone="tiny", weights="none", image_size=32, epochs=1, batch_size=32,
        device="cpu", workers=0,
    )  # fmt: skip
    result = train_baseline(manifest, config, out=tmp_path / "baseline.pt")
    assert result.counts["train_dm"] > 3 * result.counts["train_real"]
    spy.assert_inverse_counts(result.counts)


def test_class_weights_change_what_an_unbalanced_set_teaches():
    """On a 90:9:1 set the weighted loss finds the rare class; the unweighted one does not."""
    from dfx.engine.losses import class_weights

    rng = np.random.default_rng(0)
    counts = np.array([900, 90, 10])
    centres = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, 0.9]])
    targets = np.repeat(np.arange(3), counts)
    points = centres[targets] + rng.normal(0, 0.45, (len(targets), 2))
    x = torch.tensor(points, dtype=torch.float32)
    y = torch.tensor(targets)

    def rare_recall(weight):
        torch.manual_seed(0)
        model = torch.nn.Linear(2, 3)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
        loss_fn = torch.nn.CrossEntropyLoss(weight=weight)
        for _ in range(300):
            optimizer.zero_grad()
            loss_fn(model(x), y).backward()
            optimizer.step()
        predicted = model(x).argmax(1)
        return float((predicted[y == 2] == 2).float().mean())

    weighted, unweighted = rare_recall(class_weights(counts, "fusion")), rare_recall(None)
    assert weighted > 0.6 and unweighted < 0.3  # observed: about 0.9 and 0.0


# --- JPEG: 4:4:4 chroma in the bytes actually written ---


def test_jpeg_perturbation_writes_4_4_4_chroma(monkeypatch):
    written: list[bytes] = []
    real_open = Image.open

    def spy(source, *args, **kwargs):
        if isinstance(source, io.BytesIO):
            written.append(source.getvalue())
        return real_open(source, *args, **kwargs)

    monkeypatch.setattr(Image, "open", spy)
    columns = np.zeros((32, 32, 3), dtype=np.uint8)
    columns[:, 0::2] = (255, 0, 0)
    columns[:, 1::2] = (0, 0, 255)
    out = np.asarray(JpegCompression(95)(Image.fromarray(columns)), dtype=int)
    monkeypatch.undo()
    assert len(written) == 1 and written[0][:2] == b"\xff\xd8"
    with Image.open(io.BytesIO(written[0])) as encoded:
        assert JpegImagePlugin.get_sampling(encoded) == 0  # 0: 4:4:4, 2: 4:2:0
    # Outcome: one-pixel colour stripes survive only without chroma subsampling.
    assert np.abs(out - columns.astype(int)).mean() < 20  # 4:2:0 gives about 100


# --- base models: 90:10 positives to negatives in the set actually trained on ---


def test_train_base_trains_on_90_to_10_sets(manifest_path, tmp_path):
    from typer.testing import CliRunner

    from dfx.cli import app

    # fmt: off
    result = CliRunner().invoke(app, [
        "train-base", "-m", str(manifest_path), "--target", "all", "--out", str(tmp_path),
        "--backbone", "tiny", "--weights", "none", "--image-size", "32", "--epochs", "1",
        "--device", "cpu", "--workers", "0", "--json",
    ])
    # fmt: on
    assert result.exit_code == 0, result.output
    reported = json.loads(result.stdout)
    manifest = read_manifest(manifest_path)
    for name in CLASSES:
        counts = next(r for r in reported["models"] if r["target"] == name)["counts"]
        positives = sum(1 for r in manifest.select("base") if r.label == name)
        assert counts["positives"] == positives
        share = counts["negatives"] / (counts["positives"] + counts["negatives"])
        # Negatives are drawn per (class, generator) group and rounded there, so a small set
        # misses 0.10 by up to one image; 85:15 would give 0.15.
        assert abs(share - 0.10) < 0.025, (name, counts)
        assert counts["train"] + counts["val"] == counts["positives"] + counts["negatives"]


# --- roles: the same in every process, whatever PYTHONHASHSEED ---


def test_roles_are_the_same_in_separate_processes(data_dir, tmp_path):
    outputs = []
    for hash_seed in ("1", "2"):
        out = tmp_path / f"manifest-{hash_seed}.csv"
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        subprocess.run(
            [sys.executable, "-m", "dfx", "split", str(data_dir), "-o", str(out)],
            env=env, check=True, capture_output=True, timeout=SUBPROCESS_TIMEOUT,
        )  # fmt: skip
        outputs.append({row.path: row.role for row in read_manifest(out).rows})
    assert outputs[0] == outputs[1]
    # And they are the ones this process draws.
    assert outputs[0] == {row.path: row.role for row in make_manifest(data_dir).rows}


# --- directions: rotation counter-clockwise, EXIF orientation as a viewer shows it ---


def marked_image(width: int = 24, height: int = 16) -> np.ndarray:
    """Grey pixels with a red top-left corner block and a green top-right one."""
    pixels = np.full((height, width, 3), 128, dtype=np.uint8)
    pixels[:4, :4] = (255, 0, 0)
    pixels[:4, -4:] = (0, 255, 0)
    return pixels


def test_rotation_turns_counter_clockwise():
    square = marked_image(24, 24)
    rotated = np.asarray(Rotate(90)(Image.fromarray(square)))
    assert np.array_equal(rotated, np.rot90(square, 1))  # np.rot90 turns counter-clockwise
    # The red top-left corner ends bottom-left, the green top-right corner top-left.
    assert rotated[-2, 1].tolist() == [255, 0, 0] and rotated[1, 1].tolist() == [0, 255, 0]


@pytest.mark.parametrize(("orientation", "turns"), [(3, 2), (6, -1), (8, 1)])
def test_exif_orientation_turns_the_right_way(tmp_path, orientation, turns):
    """Orientation 6 means "turn clockwise to view", 8 counter-clockwise, 3 half a turn."""
    stored = marked_image()
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"oriented-{orientation}.png"  # lossless, so pixels compare exactly
    Image.fromarray(stored).save(path, exif=exif.tobytes())
    assert np.array_equal(np.asarray(load_rgb(path)), np.rot90(stored, turns))


# --- blur: kernel and sigma against an independently computed Gaussian ---


def reference_blur(pixels: np.ndarray, kernel: int, sigma: float) -> np.ndarray:
    """Separable Gaussian of ``kernel`` taps, reflect padding (edge not repeated)."""
    offsets = np.arange(kernel) - kernel // 2
    taps = np.exp(-(offsets**2) / (2 * sigma**2))
    taps /= taps.sum()
    out = pixels.astype(float)
    for axis in (0, 1):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (kernel // 2, kernel // 2)
        padded = np.pad(out, pad, mode="reflect")
        out = sum(
            t * np.take(padded, np.arange(i, i + out.shape[axis]), axis=axis)
            for i, t in enumerate(taps)
        )
    return out


@pytest.mark.parametrize(
    ("spec", "kernel", "sigma"),
    [("blurk:3", 3, 4.0), ("blurk:7", 7, 4.0), ("blur:1", 7, 1.0), ("blur:2", 13, 2.0)],
)
def test_blur_matches_an_independent_gaussian(spec, kernel, sigma):
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
    [blur] = parse_spec(spec)
    assert isinstance(blur, GaussianBlur)
    out = np.asarray(blur(Image.fromarray(noise)), dtype=float)
    expected = reference_blur(noise, kernel, sigma)
    assert np.abs(out - expected).max() <= 1.0  # rounding to 8 bits
    # A neighbouring setting is clearly different, so the test sees what it names: the
    # kernel for blurk (sigma 4 spills over any small kernel), sigma for blur.
    if spec.startswith("blurk"):
        neighbour = reference_blur(noise, kernel + 2, sigma)
    else:
        neighbour = reference_blur(noise, kernel, sigma * 1.25)
    assert np.abs(neighbour - expected).max() > 5


# --- transparency: partial alpha is a blend on black, not a cut-out ---


def test_partial_alpha_is_blended_on_black(tmp_path):
    alphas = np.array([0, 64, 128, 191, 255], dtype=np.uint8)
    rgba = np.zeros((1, 5, 4), dtype=np.uint8)
    rgba[0, :, :3] = (200, 100, 50)
    rgba[0, :, 3] = alphas
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    la = np.stack([np.full(5, 240, dtype=np.uint8), alphas], axis=-1)[None]
    Image.fromarray(la, "LA").save(tmp_path / "grey_alpha.png")
    weight = alphas[:, None] / 255
    got = np.asarray(load_rgb(tmp_path / "alpha.png"), dtype=float)[0]
    assert np.abs(got - weight * [200, 100, 50]).max() <= 1
    got = np.asarray(load_rgb(tmp_path / "grey_alpha.png"), dtype=float)[0]
    assert np.abs(got - weight * [240, 240, 240]).max() <= 1


# --- the stacked features: every channel in class order ---


def test_detector_stacks_every_class_in_order():
    from dfx.models.detector import DeepFeatureX

    torch.manual_seed(0)
    detector = DeepFeatureX("tiny", 32).eval()
    images = torch.randn(2, 3, 32, 32)
    assert list(CLASSES) == ["dm", "gan", "real"]
    with torch.inference_mode():
        stacked = detector.features(images)
        separate = [detector.extractors[name](images) for name in CLASSES]
    for channel, features in enumerate(separate):
        assert torch.allclose(stacked[:, channel], features)
    # The three extractors differ, so a swap of any two channels would be seen.
    assert not torch.allclose(separate[0], separate[2])
    assert not torch.allclose(separate[0], separate[1])
