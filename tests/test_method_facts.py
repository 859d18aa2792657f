"""The method's fixed facts, each tested where it takes effect.

Every test here guards one fact that a plausible slip would break silently: the loss weights
the trainers hand to their loss, the chroma sampling and quality factor of the JPEG bytes,
the 90:10 share and 80/20 hold-out of the base models' sets, roles that survive a new Python
process, the directions of rotation and EXIF orientation, the blur kernel, partial
transparency, the class order of the stacked features, the optimizer, epochs, schedule and
kept weights of real training runs, the preprocessing the network receives, and the check
that the base models of a detector match. docs/testing.md lists the fault each test catches.
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
from tests.conftest import fixed_torch_threads
from tests.helpers import invoke

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
    held = {name: round(0.2 * count) for name, count in fusion.items()}
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


# --- base models: 90:10 positives to negatives, 80/20 train/validation, in the sets trained on ---


def test_train_base_trains_on_90_to_10_sets_held_out_80_20(manifest_path, tmp_path):
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
        # 80/20 train/validation, drawn apart for positives and negatives (70/30 would
        # hold out 24 + 3); the model file records the same counts.
        assert counts["positives"] >= 60 and counts["negatives"] >= 6
        assert counts["val"] == round(0.2 * counts["positives"]) + round(0.2 * counts["negatives"])
        stored = torch.load(next(r for r in reported["models"] if r["target"] == name)["path"],
                            weights_only=True)["metrics"]["counts"]  # fmt: skip
        assert stored == counts


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


# --- JPEG: the quality factor in the bytes actually written ---


def jpeg_bytes_written(monkeypatch, call) -> tuple[list[bytes], object]:
    """The JPEG byte strings dfx decodes from memory while ``call()`` runs, and its result."""
    written: list[bytes] = []
    real_open = Image.open

    def spy(source, *args, **kwargs):
        if isinstance(source, io.BytesIO) and source.getvalue()[:2] == b"\xff\xd8":
            written.append(source.getvalue())
        return real_open(source, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(Image, "open", spy)
        result = call()
    return written, result


def pillow_tables(quality: int) -> dict[int, list[int]]:
    """The quantisation tables Pillow writes at ``quality`` with 4:4:4 chroma."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (90, 120, 200)).save(
        buffer, format="JPEG", quality=quality, subsampling=0
    )
    with Image.open(buffer) as reference:
        return {k: list(v) for k, v in reference.quantization.items()}


def tables_of(encoded: bytes) -> dict[int, list[int]]:
    """The quantisation tables of a JPEG byte string."""
    with Image.open(io.BytesIO(encoded)) as image:
        return {k: list(v) for k, v in image.quantization.items()}


def assert_tables_of(encoded: bytes, quality: int) -> None:
    """``encoded`` carries the tables of ``quality``, as the reader of ``dfx audit`` sees them."""
    from dfx.data.metadata import jpeg_quality

    tables = tables_of(encoded)
    assert tables == pillow_tables(quality), quality
    assert jpeg_quality(tables) == quality


QUALITIES = (10, 50, 75, 95)


def test_jpeg_perturbations_write_the_tables_of_their_quality(monkeypatch):
    """Through the perturbations that ``evaluate --qf`` and ``jpeg-robustness`` build."""
    from dfx.data.perturbations import jpeg_grid

    noise = np.random.default_rng(2).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    image = Image.fromarray(noise)
    grid = jpeg_grid(list(QUALITIES))
    assert [p.name for p in grid] == [f"jpeg:{q}" for q in QUALITIES]
    for quality, perturbation in zip(QUALITIES, grid):
        written, _ = jpeg_bytes_written(monkeypatch, lambda p=perturbation: p(image))
        assert len(written) == 1
        assert_tables_of(written[0], quality)
    # The tables of neighbouring qualities differ, so a fixed quality would be seen.
    assert len({str(pillow_tables(q)) for q in (*QUALITIES, 90)}) == len(QUALITIES) + 1


@pytest.mark.parametrize(("command", "qfs"), [("evaluate", (30,)), ("jpeg-robustness", (10, 75))])
def test_jpeg_commands_compress_at_the_quality_asked(tiny_models, monkeypatch, command, qfs):
    from dfx.data.metadata import jpeg_quality

    options = [x for q in qfs for x in ("--qf", str(q))]
    written, result = jpeg_bytes_written(
        monkeypatch,
        lambda: invoke(command, "--model", tiny_models["model"], "-m", tiny_models["manifest"],
                       *options, "--device", "cpu", "--workers", "0", "--json"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    qualities = [jpeg_quality(tables_of(encoded)) for encoded in written]
    # Every evaluated image is compressed once at each quality asked, and at no other.
    assert sorted(set(qualities)) == sorted(qfs)
    assert len({qualities.count(q) for q in qfs}) == 1 and qualities.count(qfs[0]) >= 6
    for encoded, quality in zip(written, qualities):
        assert_tables_of(encoded, quality)


# --- training: the optimizer, the epochs, the schedule and the weights kept, in real runs ---


class AdamSpy:
    """Keeps every optimizer built through ``torch.optim.Adam`` while it is installed."""

    def __init__(self, patch: pytest.MonkeyPatch):
        self.built: list[torch.optim.Optimizer] = []
        real, built = torch.optim.Adam, self.built

        class Recording(real):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                built.append(self)

        patch.setattr(torch.optim, "Adam", Recording)

    def take(self) -> list[torch.optim.Optimizer]:
        """The optimizers built since the last call."""
        taken = list(self.built)
        self.built.clear()
        return taken


def history(path: Path) -> list[dict]:
    """A training history file (JSON lines), one dict per epoch."""
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def run_ok(*args) -> dict:
    """A dfx command that must succeed, and its --json document."""
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


TINY_DEFAULTS = ["--backbone", "tiny", "--weights", "none", "--image-size", "32",
                 "--device", "cpu", "--workers", "0"]  # fmt: skip
"""A tiny training run that leaves epochs, learning rate and weight decay at their defaults."""


@pytest.fixture(scope="module")
def tiny_models(little_data, tmp_path_factory) -> dict:
    """Base models, a detector and a baseline trained through the CLI with default settings.

    50 epochs (one epoch for the gan and real base models), Adam at lr 1e-4 and weight
    decay 1e-3 (nothing asked for), on the 12-image set of ``little_data``; records the
    optimizers each command built.
    """
    out = tmp_path_factory.mktemp("facts")
    runs: dict = {"manifest": little_data, "base_dir": out / "base", "model": out / "model.pt",
                  "baseline": out / "baseline.pt", "optimizers": {}}  # fmt: skip
    with fixed_torch_threads(), pytest.MonkeyPatch.context() as patch:
        spy = AdamSpy(patch)
        # dm with the default epochs; gan and real (needed by the fusion) in one.
        runs["base"] = run_ok("train-base", "-m", little_data, "--target", "dm",
                              *TINY_DEFAULTS, "-o", runs["base_dir"])  # fmt: skip
        for target in ("gan", "real"):
            run_ok("train-base", "-m", little_data, "--target", target, *TINY_DEFAULTS,
                   "--epochs", "1", "-o", runs["base_dir"])  # fmt: skip
        runs["optimizers"]["base"] = spy.take()
        runs["fusion"] = run_ok("train-fusion", "-m", little_data, "--base-dir",
                                runs["base_dir"], "--device", "cpu", "--workers", "0",
                                "-o", runs["model"])  # fmt: skip
        runs["optimizers"]["fusion"] = spy.take()
        runs["baseline_run"] = run_ok("train-baseline", "-m", little_data, *TINY_DEFAULTS,
                                      "-o", runs["baseline"])  # fmt: skip
        runs["optimizers"]["baseline"] = spy.take()
    return runs


def histories(tiny_models) -> dict[str, list[dict]]:
    """Each history the fixture's runs wrote, by model."""
    [dm] = tiny_models["base"]["models"]
    found = {"base dm": history(dm["history"])}
    found["fusion"] = history(tiny_models["fusion"]["history"])
    found["baseline"] = history(tiny_models["baseline_run"]["history"])
    return found


@pytest.mark.parametrize(("trainer", "models"), [("base", 3), ("fusion", 1), ("baseline", 1)])
def test_training_builds_adam_with_the_official_settings(tiny_models, trainer, models):
    built = tiny_models["optimizers"][trainer]
    assert len(built) == models, built  # one Adam per model trained, nothing else
    for optimizer in built:
        [group] = optimizer.param_groups
        assert group["lr"] == pytest.approx(1e-4)
        assert group["weight_decay"] == pytest.approx(1e-3)
        assert tuple(group["betas"]) == (0.9, 0.999)
        assert not group.get("amsgrad") and not group.get("decoupled_weight_decay")
        assert sum(p.numel() for p in group["params"]) > 1000  # the network's, not a stand-in
    # The rate a run uses is the one built: constant without --lr-step.
    for name, epochs in histories(tiny_models).items():
        if name.startswith(trainer):
            assert all(e["lr"] == pytest.approx(1e-4) for e in epochs), name


def test_training_runs_50_epochs_by_default(tiny_models):
    from dfx.engine import configs

    for name in ("TrainConfig", "BaseTrainConfig", "BaselineTrainConfig", "FusionTrainConfig"):
        assert getattr(configs, name)().epochs == 50, name
    # The command line's default reaches training: 50 epochs ran, and the files say so.
    for name, epochs in histories(tiny_models).items():
        assert [e["epoch"] for e in epochs] == list(range(1, 51)), name
    stored = torch.load(tiny_models["model"], weights_only=True)["config"]
    assert stored["fusion"]["epochs"] == 50
    assert stored["base"]["dm"]["epochs"] == 50
    baseline = torch.load(tiny_models["baseline"], weights_only=True)["config"]["baseline"]
    assert baseline["epochs"] == 50


@pytest.mark.parametrize(
    ("command", "options", "rates"),
    [
        ("train-fusion", ["--lr-step", "2", "--epochs", "5", "--lr", "1e-3"],
         [1e-3, 1e-3, 1e-4, 1e-4, 1e-5]),
        ("train-baseline", [*TINY_DEFAULTS, "--lr-step", "1", "--epochs", "3", "--lr", "1e-2"],
         [1e-2, 1e-3, 1e-4]),
    ],
)  # fmt: skip
def test_lr_step_multiplies_the_rate_by_0_1(tiny_models, tmp_path, command, options, rates):
    """``--lr-step N`` is StepLR(N, gamma 0.1), as the history's ``lr`` column shows."""
    base = ["--base-dir", tiny_models["base_dir"]] if command == "train-fusion" else []
    extra = [] if command == "train-baseline" else ["--device", "cpu", "--workers", "0"]
    with fixed_torch_threads():
        run = run_ok(command, "-m", tiny_models["manifest"], *base, *options, *extra,
                     "-o", tmp_path / "model.pt")  # fmt: skip
    assert [e["lr"] for e in history(run["history"])] == pytest.approx(rates, rel=1e-9)


class ValidationSpy:
    """Records each loss computed without gradients: the network's input, targets, weights.

    A global forward pre-hook keeps the input of the outermost module call; a spy on
    ``cross_entropy`` pairs it with the targets and class weights of the loss that follows.
    """

    def __init__(self, patch: pytest.MonkeyPatch):
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = []
        self._depth = 0
        self.last_input: torch.Tensor | None = None
        real = torch.nn.functional.cross_entropy

        def spy(logits, targets, weight=None, *args, **kwargs):
            if not torch.is_grad_enabled() and self.last_input is not None:
                kept = None if weight is None else weight.detach().clone()
                self.calls.append((self.last_input, targets.detach().clone(), kept))
            return real(logits, targets, weight, *args, **kwargs)

        patch.setattr(torch.nn.functional, "cross_entropy", spy)
        hooks = torch.nn.modules.module
        self._handles = [
            hooks.register_module_forward_pre_hook(self._enter),
            hooks.register_module_forward_hook(self._leave),
        ]

    def _enter(self, module, args):
        is_loss = isinstance(module, torch.nn.CrossEntropyLoss)  # its input is logits
        if self._depth == 0 and not is_loss and args and isinstance(args[0], torch.Tensor):
            self.last_input = args[0].detach().clone()
        self._depth += 1

    def _leave(self, module, args, output):
        self._depth -= 1

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def weighted_mean_loss(network, calls) -> float:
    """The class-weighted mean cross entropy of ``network`` over the recorded batches."""
    total, weight_sum = 0.0, 0.0
    with torch.inference_mode():
        for inputs, targets, weight in calls:
            logits = network(inputs).float()
            losses = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
            weights = torch.ones(len(targets)) if weight is None else weight[targets]
            total += float((losses * weights).sum())
            weight_sum += float(weights.sum())
    return total / weight_sum


def fusion_head_of(model_path: Path) -> torch.nn.Module:
    """The fusion head stored in a tiny 32-pixel detector file, in eval mode."""
    from dfx.models.detector import DeepFeatureX

    detector = DeepFeatureX("tiny", 32)
    detector.load_state_dict(torch.load(model_path, weights_only=True)["state_dict"])
    return detector.head.eval()


def soaring_fusion_run(tiny_models, out: Path, **settings):
    """A fusion run whose rate jumps from 1e-3 to 1 after epoch 3, so that its losses soar.

    The weights to keep are then among the first three epochs' on any CPU, never the last's.
    """
    from dfx.engine.configs import FusionTrainConfig
    from dfx.engine.fusion_training import train_fusion

    config = FusionTrainConfig(lr=1e-3, lr_step=3, lr_gamma=1000.0, device="cpu", workers=0,
                               **{"epochs": 5, **settings})  # fmt: skip
    base = {name: tiny_models["base_dir"] / f"{name}.pt" for name in CLASSES}
    with fixed_torch_threads():
        return train_fusion(read_manifest(tiny_models["manifest"]), base, config, out=out)


def test_the_kept_weights_are_the_best_validation_epochs(tiny_models, tmp_path, monkeypatch):
    out = tmp_path / "model.pt"
    spy = ValidationSpy(monkeypatch)
    try:
        run = soaring_fusion_run(tiny_models, out)
    finally:
        spy.remove()
    epochs = history(run.history_path)
    losses = [e["val_loss"] for e in epochs]
    assert run.best_epoch == 1 + int(np.argmin(losses)) <= 3
    assert losses[-1] > 2 * losses[run.best_epoch - 1]  # the last epoch's weights are worse
    # Validation ran once per epoch on the same batches: recompute it with the saved weights.
    assert spy.calls and len(spy.calls) % len(epochs) == 0
    one_epoch = spy.calls[: len(spy.calls) // len(epochs)]
    assert sum(len(targets) for _, targets, _ in one_epoch) == run.counts["val"] > 0
    recomputed = weighted_mean_loss(fusion_head_of(out), one_epoch)
    assert recomputed == pytest.approx(losses[run.best_epoch - 1], rel=1e-5)
    assert recomputed != pytest.approx(losses[-1], rel=1e-3)


def test_without_validation_the_lowest_training_loss_is_kept(tiny_models, tmp_path):
    """``val_fraction`` 0: the weights kept are those of the epoch of least training loss."""
    run = soaring_fusion_run(tiny_models, tmp_path / "long.pt", val_fraction=0.0)
    epochs = history(run.history_path)
    losses = [e["train_loss"] for e in epochs]
    assert run.counts["val"] == 0 and all(e["val_loss"] is None for e in epochs)
    # An epoch's training loss is taken during its steps, before its last update: epoch 4's
    # still shows epoch 3's weights, so 4 may win; the last epoch, after the jump, cannot.
    assert run.best_epoch == 1 + int(np.argmin(losses)) <= 4, losses
    assert losses[-1] > 2 * losses[run.best_epoch - 1]
    # A run stopped at that epoch repeats the first epochs exactly and ends with their weights.
    short = soaring_fusion_run(
        tiny_models, tmp_path / "short.pt", val_fraction=0.0, epochs=run.best_epoch
    )
    assert [e["train_loss"] for e in history(short.history_path)] == losses[: run.best_epoch]
    kept = fusion_head_of(tmp_path / "long.pt").state_dict()
    at_best = fusion_head_of(tmp_path / "short.pt").state_dict()
    assert all(torch.equal(kept[k], at_best[k]) for k in kept)


def resnet18_base_file(tiny_base: Path, out: Path) -> Path:
    """The tiny base model's file with an untrained resnet18 of 32 pixels in its place."""
    from dfx.models.backbones import build_network

    payload = torch.load(tiny_base, weights_only=True)
    payload["backbone"] = "resnet18"
    payload["state_dict"] = build_network("resnet18", "none", 32).state_dict()
    torch.save(payload, out)
    return out


@pytest.mark.parametrize("other", ["backbone", "input size"])
def test_train_fusion_refuses_base_models_of_another_network(tiny_models, tmp_path, other):
    from tests.helpers import assert_user_error

    folder = tmp_path / "base"
    folder.mkdir()
    for name in ("dm", "real"):
        (folder / f"{name}.pt").write_bytes((tiny_models["base_dir"] / f"{name}.pt").read_bytes())
    if other == "backbone":
        resnet18_base_file(tiny_models["base_dir"] / "gan.pt", folder / "gan.pt")
        shown = "gan: resnet18 32px"
    else:
        run_ok("train-base", "-m", tiny_models["manifest"], "--target", "gan", *TINY_DEFAULTS,
               "--image-size", "48", "--epochs", "1", "-o", folder)  # fmt: skip
        shown = "gan: tiny 48px"
    result = invoke("train-fusion", "-m", tiny_models["manifest"], "--base-dir", folder,
                    "--epochs", "1", "--device", "cpu", "--workers", "0",
                    "-o", tmp_path / "m.pt")  # fmt: skip
    assert_user_error(result, "must share one backbone and input size", "dm: tiny 32px", shown)
    assert not (tmp_path / "m.pt").exists()


# --- preprocessing: resize N×N, /255, ImageNet mean and std, computed independently ---


def reference_tensor(image: Image.Image, resize: int, crop: int | None) -> np.ndarray:
    """PIL bilinear resize to resize×resize, centre crop, /255, ImageNet mean/std; (3, H, W).

    The crop's offset is torchvision's: round((resize - crop) / 2), half to even.
    """
    pixels = np.asarray(image.resize((resize, resize), Image.Resampling.BILINEAR), dtype=float)
    if crop is not None:
        top = round((resize - crop) / 2)
        pixels = pixels[top : top + crop, top : top + crop]
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    return ((pixels / 255 - mean) / std).transpose(2, 0, 1)


FAMILIES = {"densenet121": (256, None), "efficientnet_b0": (256, None), "resnet50": (256, None),
            "vit_b_16": (256, 224), "tiny": (64, None)}  # fmt: skip
"""One backbone of each preprocessing family, and its default (resize, crop)."""


@pytest.mark.parametrize("backbone", sorted(FAMILIES))
def test_preprocessing_is_resize_scale_and_imagenet_normalisation(backbone):
    from dfx.models.registry import REGISTRY, get_spec

    # Every backbone of the registry belongs to one of the families tested here.
    assert {name.rstrip("0123456789").split("_")[0] for name in REGISTRY} <= {
        "densenet", "efficientnet", "resnet", "resnext", "vit", "tiny"}  # fmt: skip
    rng = np.random.default_rng(3)
    image = Image.fromarray(rng.integers(0, 256, (300, 280, 3), dtype=np.uint8))  # not square
    resize, crop = FAMILIES[backbone]
    spec = get_spec(backbone)
    for size, expected_sides in ((None, (resize, crop)), (48, (55, 48) if crop else (48, None))):
        preprocessing = spec.preprocessing(size)
        tensor = preprocessing(image).numpy()
        expected = reference_tensor(image, *expected_sides)
        assert tensor.shape == expected.shape == (3, *[expected_sides[1] or expected_sides[0]] * 2)
        assert np.abs(tensor - expected).max() < 1e-5, (backbone, size)


def test_the_network_receives_the_preprocessed_image(tiny_models, tmp_path, monkeypatch):
    """What ``dfx predict`` feeds the detector is the independently computed tensor."""
    rng = np.random.default_rng(4)
    image = Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
    image.save(tmp_path / "photo.png")
    spy = ValidationSpy(monkeypatch)  # its pre-hook keeps the outermost module's input
    try:
        result = invoke("predict", "--model", tiny_models["model"], tmp_path / "photo.png",
                        "--device", "cpu", "--json")  # fmt: skip
    finally:
        spy.remove()
    assert result.exit_code == 0, result.output
    received = spy.last_input
    assert received is not None and received.shape == (1, 3, 32, 32)
    expected = reference_tensor(image, 32, None)
    assert np.abs(received[0].float().numpy() - expected).max() < 1e-5
