"""The fast paths stay correct: lazy imports, shrink-on-decode, spawn-safe data, Placement."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from typer.testing import CliRunner

import dfx
from dfx.cli import app
from dfx.data.dataset import ImageDataset, collate_images
from dfx.data.decoding import load_rgb
from dfx.data.perturbations import JpegCompression
from dfx.data.transforms import Preprocessing
from dfx.engine.device import Placement, resolve_placement
from dfx.errors import DfxError
from dfx.models.inference_settings import default_batch_size
from tests.compare import assert_same_up_to_rounding
from tests.helpers import invoke

COMMANDS = tuple(command.name for command in app.registered_commands)

HELP_PROBE = """
import sys
from dfx.cli import app
for arguments in [["--help"]] + [[name, "--help"] for name in sys.argv[1:]]:
    try:
        app(arguments)
    except SystemExit as done:
        assert done.code == 0, (arguments, done.code)
    heavy = sorted(m for m in ("torch", "torchvision", "numpy", "PIL") if m in sys.modules)
    if heavy:
        sys.exit(f"dfx {' '.join(arguments)} imported {', '.join(heavy)}")
"""


def test_help_of_every_command_imports_no_torch():
    done = subprocess.run(
        [sys.executable, "-c", HELP_PROBE, *COMMANDS],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "Usage" in done.stdout and "--compile" in done.stdout


def _photo(size: tuple[int, int]) -> Image.Image:
    """A smooth picture with some detail: a gradient plus a few rectangles."""
    width, height = size
    x = np.linspace(0, 255, width)[None, :, None]
    y = np.linspace(0, 255, height)[:, None, None]
    pixels = np.concatenate([x + 0 * y, y + 0 * x, (x + y) / 2], axis=2)
    image = Image.fromarray(pixels.astype(np.uint8), "RGB")
    for i in range(6):
        box = (i * width // 8, i * height // 9, i * width // 8 + width // 10, height - 1)
        image.paste((40 * i, 255 - 40 * i, 128), box)
    return image


@pytest.mark.parametrize("suffix", ["jpg", "png"])
def test_large_files_are_shrunk_while_decoding_with_inputs_kept_close(tmp_path, suffix):
    path = tmp_path / f"large.{suffix}"
    _photo((1600, 1200)).save(path, quality=95)
    full = load_rgb(path)
    shrunk = load_rgb(path, target_size=64)
    assert full.size == (1600, 1200)
    assert min(shrunk.size) >= 3 * 64 and shrunk.width < 1600 / 2  # never below 3 × target
    preprocessing = Preprocessing(64)
    difference = (preprocessing(full) - preprocessing(shrunk)).abs() * 0.229 * 255
    assert difference.mean() < 1.0  # within a grey level on average


def test_small_files_and_perturbed_inputs_are_decoded_in_full(tmp_path):
    small = tmp_path / "small.jpg"
    _photo((300, 200)).save(small)
    assert load_rgb(small, target_size=64).size == (300, 200)  # not 3 × 64 larger
    plain = ImageDataset([small], None, Preprocessing(64))
    perturbed = ImageDataset([small], None, Preprocessing(64), JpegCompression(50))
    assert plain.decode_size == 64
    assert perturbed.decode_size is None  # JPEG re-encoding must see the real image


def test_dataset_pickles_and_loads_under_spawn(data_dir):
    files = sorted((data_dir / "real").rglob("*.png"))[:4]
    dataset = ImageDataset(files, [2] * 4, Preprocessing(32), JpegCompression(75))
    copy = pickle.loads(pickle.dumps(dataset))
    assert torch.equal(copy[0][0], dataset[0][0])
    inline = collate_images([dataset[i] for i in range(4)])
    loader = DataLoader(
        dataset,
        batch_size=4,
        num_workers=1,
        multiprocessing_context="spawn",
        collate_fn=collate_images,
    )
    (spawned,) = list(loader)
    assert torch.equal(spawned.inputs, inline.inputs)
    assert spawned.indices.tolist() == [0, 1, 2, 3]


def test_placement_layout_on_cpu_and_channels_last():
    cpu = resolve_placement("cpu")
    assert not cpu.channels_last and default_batch_size("tiny", cpu.device.type) == 32
    images = torch.rand(2, 3, 8, 8)
    assert cpu.to_device(images).is_contiguous()
    wide = Placement(torch.device("cpu"), None, channels_last=True)
    network = wide.prepare(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv1d(4, 4, 1)))
    assert network[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not network[0].weight.is_contiguous()
    assert wide.to_device(images).is_contiguous(memory_format=torch.channels_last)
    features = torch.rand(2, 3, 16)
    assert wide.to_device(features).is_contiguous()  # only image batches change layout


def test_compile_keeps_the_module_and_its_state_dict_keys():
    placement = Placement(torch.device("cpu"), None, compile=True)
    network = nn.Sequential(nn.Linear(4, 2))
    keys = list(network.state_dict())
    prepared = placement.prepare(network)
    assert prepared is network and list(prepared.state_dict()) == keys
    assert prepared._compiled_call_impl is not None


def test_compile_without_a_compiler_fails_in_one_sentence(monkeypatch, trained):
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(DfxError, match="C\\+\\+ compiler"):
        resolve_placement("cpu", compile=True)
    image = sorted((trained["manifest"].parent / "data" / "real").rglob("*.png"))[0]
    result = CliRunner().invoke(
        app, ["predict", "--model", str(trained["model"]), "--compile", str(image)]
    )
    assert result.exit_code == 2
    assert "compiling on CPU needs a C++ compiler" in result.output
    assert "Traceback" not in result.output


def test_default_batch_size_and_workers_give_the_same_predictions(trained):
    detector = dfx.load_detector(trained["model"], device="cpu")
    files = sorted((trained["manifest"].parent / "data" / "dm").rglob("*.png"))[:40]
    automatic = detector.predict(files)  # 40 > 32 images: one worker process on 2+ CPUs
    inline = detector.predict(files, batch_size=7, workers=0)
    assert [p.path for p in automatic] == [p.path for p in inline]
    assert_same_up_to_rounding([p.to_dict() for p in automatic], [p.to_dict() for p in inline])


# --- --compile ---


def test_compile_gives_the_eager_results_within_rounding(trained, tmp_path):
    images = sorted((Path(trained["manifest"]).parent / "data" / "gan").rglob("*.png"))[:4]
    args = ["predict", "-M", trained["model"], "--device", "cpu", *images]
    eager = invoke(*args, "--json")
    assert eager.exit_code == 0, eager.output
    compiled = invoke(*args, "--compile", "--json")
    try:  # the documented refusals (no C++ compiler, an unsupported Python), said up front
        resolve_placement("cpu", compile=True)
    except DfxError as refusal:
        assert compiled.exit_code == 2 and str(refusal) in compiled.stderr, compiled.output
        pytest.skip(f"torch.compile is not usable here: {refusal}")
    assert compiled.exit_code == 0, compiled.output
    for a, b in zip(eager.stdout.splitlines(), compiled.stdout.splitlines(), strict=True):
        a, b = json.loads(a), json.loads(b)
        assert a["path"] == b["path"] and a["label"] == b["label"] and a["fake"] == b["fake"]
        for name, p in a["probs"].items():
            assert abs(p - b["probs"][name]) < 1e-4, (a["path"], name)
