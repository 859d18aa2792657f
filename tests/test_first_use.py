"""What a new user trips on: output that scripts can rely on, one rule for empty inputs,
honest offline behaviour, and nothing past --quiet but results."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dfx.checkpoint import DETECTOR_FORMAT, load_model_file
from dfx.classes import CLASSES
from dfx.data.manifest import read_manifest
from tests.helpers import TINY_RUN, assert_user_error, invoke
from tests.test_cli_conventions import run_dfx, stderr_of

CPU = ["--device", "cpu", "--workers", "0"]


@pytest.fixture()
def inputs(trained, tmp_path) -> dict[str, Path]:
    """A PNG and a JPEG (with a quality estimate: provenance) of the trained set, a 1×1 image."""
    png = next((trained["manifest"].parent / "data" / "gan" / "toygan-a").iterdir())
    jpeg = tmp_path / "photo.jpg"
    Image.open(png).convert("RGB").save(jpeg, quality=90)
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (1, 1), (120, 30, 200)).save(tiny)
    return {"png": png, "jpeg": jpeg, "tiny": tiny}


# Item 2: "wrote FILE" goes to stderr, and -q hides it.


def test_written_files_are_named_on_stderr_and_hidden_by_quiet(trained, data_dir, tmp_path):
    runs = {
        "audit": ["audit", data_dir, "--plots", tmp_path / "plots"],
        "card": ["card", "-M", trained["model"], "--repo", "lab/x", "--out", tmp_path / "c.md"],
    }
    for name, args in runs.items():
        loud = invoke(*args)
        assert loud.exit_code == 0, (name, loud.output)
        assert "wrote " in loud.stderr and "wrote " not in loud.stdout, name
        quiet = invoke("-q", *args)
        assert quiet.exit_code == 0 and "wrote " not in quiet.output, name
    assert (tmp_path / "c.md").read_text().startswith("---")
    assert invoke("-q", *runs["card"]).stdout == ""


# Item 3: the predict TSV has nine columns, whatever the inputs.


def test_predict_lines_have_nine_columns_with_or_without_provenance(trained, inputs):
    header = "path label p_dm p_gan p_real p_fake fake error provenance".split()
    for paths in ([inputs["png"]], [inputs["jpeg"], inputs["png"], "absent.png"]):
        result = invoke("predict", "-M", trained["model"], *paths, *CPU)
        lines = result.stdout.splitlines()
        assert lines[0].split("\t") == header
        assert len(lines) == len(paths) + 1 and all(line.count("\t") == 8 for line in lines)
    by_path = {line.split("\t")[0]: line.split("\t") for line in lines[1:]}
    assert by_path[str(inputs["jpeg"])][8].startswith("JPEG q")  # its quality estimate
    assert by_path[str(inputs["png"])][8] == ""
    assert by_path["absent.png"][7] == "no such file or folder"


# Item 4 and item 14: explain off a terminal; its records carry provenance as predict's do.


def test_explain_off_a_terminal_prints_tab_separated_lines(trained, inputs, tmp_path):
    long_name = tmp_path / ("x" * 120 + ".png")
    shutil.copy(inputs["png"], long_name)
    result = invoke("explain", "-M", trained["model"], long_name, inputs["jpeg"], "--out",
                    tmp_path / "out", *CPU)  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    assert lines[0] == ["path", "label", "p_fake", "fake", "target", "share_dm", "share_gan",
                        "share_real", "contact_sheet", "error"]  # fmt: skip
    assert len(lines) == 3 and all(len(cells) == 10 for cells in lines)
    assert lines[1][0] == str(long_name)  # whole, never folded
    assert Path(lines[1][8]).is_file() and lines[1][8].endswith(".sheet.png")
    assert sum(float(share) for share in lines[1][5:8]) == pytest.approx(1.0, abs=1e-3)


def test_explain_records_carry_the_provenance_predict_gives(trained, inputs, tmp_path):
    explained = invoke("explain", "-M", trained["model"], inputs["jpeg"], "--out", tmp_path,
                       "--json", "-", *CPU)  # fmt: skip
    predicted = invoke("predict", "-M", trained["model"], inputs["jpeg"], "--json", *CPU)
    [explanation] = [json.loads(line) for line in explained.stdout.splitlines()]
    [prediction] = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert explanation["provenance"] == prediction["provenance"]
    assert explanation["provenance"]["jpeg_quality"] is not None


# Item 12: backbones off a terminal.


def test_backbones_off_a_terminal_prints_full_names():
    result = invoke("backbones")
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    assert lines[0][0] == "backbone" and {len(cells) for cells in lines} == {5}
    names = [cells[0] for cells in lines[1:]]
    assert {"efficientnet_b0", "efficientnet_b4", "densenet121"} <= set(names)


# Item 5: one rule for empty inputs.


def test_nothing_to_run_on_is_a_usage_error_before_torch_loads(trained, data_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "notes.txt").write_text("not an image")
    model = trained["model"]
    runs = {
        "predict an empty folder": ["predict", "-M", model, empty],
        "predict a folder of text": ["predict", "-M", model, notes],
        "explain an empty folder": ["explain", "-M", model, empty],
        "evaluate an empty --data": ["evaluate", "-M", model, "--data", empty],
    }
    for name, args in runs.items():
        started = time.monotonic()
        done = run_dfx(*args)
        errors, torch_loaded = stderr_of(done)
        assert done.returncode == 2, (name, errors)
        assert errors.count("error:") == 1 and "Traceback" not in errors, (name, errors)
        assert str(empty if "empty" in name else notes) in errors, (name, errors)
        assert not torch_loaded, name
        assert time.monotonic() - started < 60, name
    assert "notes.txt" in stderr_of(run_dfx(*runs["predict a folder of text"]))[0]
    stdin = invoke("predict", "-M", model, "-", input="")
    assert_user_error(stdin, "no images to predict", "standard input")


def test_files_passed_over_in_a_folder_are_named(trained, inputs, tmp_path):
    folder = tmp_path / "inbox"
    folder.mkdir()
    shutil.copy(inputs["png"], folder / "a.png")
    (folder / "notes.txt").write_text("a note, not an image")
    result = invoke("predict", "-M", trained["model"], folder, *CPU)
    assert result.exit_code == 0, result.output
    assert str(folder / "notes.txt") in result.stderr and "notes.txt" not in result.stdout
    assert len(result.stdout.splitlines()) == 2


# Item 6: split keeps an existing manifest; evaluate warns about training images.


def test_split_never_overwrites_a_manifest_without_force(data_dir, tmp_path):
    out = tmp_path / "manifest.csv"
    out.write_text("path,label,generator,role\n")
    refused = invoke("split", data_dir, "--out", out, "--json")
    assert_user_error(refused, "already exists", "--force")
    assert out.read_text() == "path,label,generator,role\n" and refused.stdout == ""
    forced = invoke("split", data_dir, "--out", out, "--force", "--json")
    assert forced.exit_code == 0, forced.output
    assert json.loads(forced.stdout)["n"] == 600
    assert len(out.read_text().splitlines()) == 602  # a comment line, the header, 600 rows


def test_evaluate_warns_when_the_images_were_training_images(trained):
    model_file = load_model_file(trained["model"], DETECTOR_FORMAT)
    assert len(model_file.trained_on) > 0  # the base and fusion images it was trained on
    args = ["evaluate", "-M", trained["model"], "-m", trained["manifest"], *CPU]
    on_training = invoke(*args, "--role", "fusion", "--json")
    assert on_training.exit_code == 0, on_training.output
    [warning] = [line for line in on_training.stderr.splitlines() if "warning:" in line]
    fusion = sum(row.role == "fusion" for row in read_manifest(trained["manifest"]).rows)
    assert f"{fusion} of the {fusion} images given to evaluate were training images" in warning
    assert json.loads(on_training.stdout)["n"] <= fusion  # measured after balancing
    older_name = invoke("-q", *args, "--split", "fusion", "--json")  # --role's older name
    assert older_name.exit_code == 0, older_name.output
    assert json.loads(older_name.stdout)["n"] == json.loads(on_training.stdout)["n"]
    on_test = invoke("-q", *args, "--json")
    assert on_test.exit_code == 0 and "warning" not in on_test.stderr


# Item 7: split refuses the binary layout before it reads any image.


def test_split_refuses_a_binary_tree_before_reading_any_image(tmp_path, monkeypatch):
    from dfx.data import layout

    for folder in ("0_real", "1_fake"):
        (tmp_path / "data" / "set" / folder).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "data" / "set" / folder / "a.png")

    def opened(*args):
        raise AssertionError("an image was read before the layout was checked")

    monkeypatch.setattr(layout, "not_an_image", opened)
    monkeypatch.setattr("dfx.data.manifest.decode_failures", opened)
    result = invoke("split", tmp_path / "data", "--out", tmp_path / "m.csv")
    assert_user_error(result, "binary 0_real/1_fake layout")


# Item 8: the Hub without a network (item 9, a mistyped --sha256: test_model_source.py).


def closed_port() -> int:
    """A 127.0.0.1 port that nothing listens on (connections are refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_hub_is_one_sentence_at_once_and_the_cache_serves(trained, tmp_path):
    import huggingface_hub  # noqa: F401  (the hub extra, which the test extra brings)

    from tests.test_model_source import COMMIT, hub_cache

    model = Path(trained["model"]).read_bytes()
    hub_cache(tmp_path / "hf", "lab/dfx-demo", {"model.pt": model})
    env = {"HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}", "HF_HUB_CACHE": str(tmp_path / "hf"),
           "DFX_OFFLINE": "", "HF_HUB_OFFLINE": "", "HF_HUB_DISABLE_TELEMETRY": "1"}  # fmt: skip
    image = next((trained["manifest"].parent / "data" / "real").rglob("*.png"))
    started = time.monotonic()
    missing = run_dfx("predict", "-M", "hf://lab/dfx-demo/other.pt", image, env=env)
    errors, _ = stderr_of(missing)
    assert time.monotonic() - started < 20  # huggingface_hub alone retries for about 23 s
    assert missing.returncode == 2 and errors.count("\n") == 0, errors
    assert "not in the Hugging Face cache" in errors and "Retrying" not in errors
    cached = run_dfx("predict", "-M", f"hf://lab/dfx-demo@{COMMIT}/model.pt", image, "--json",
                     "--workers", "0", env=env)  # fmt: skip
    assert cached.returncode == 0, cached.stderr
    assert json.loads(cached.stdout)["label"] in CLASSES
    assert "Retrying" not in cached.stderr and "thrown while" not in cached.stderr


# Item 10: no noise from torch or torchvision.


def test_missing_imagenet_weights_print_nothing_before_the_error(tmp_path, monkeypatch, capfd):
    import urllib.error

    import torch.hub

    from dfx.errors import DfxError
    from dfx.models.backbones import _with_imagenet_weights, get_spec

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def unreachable(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", unreachable)
    with pytest.raises(DfxError, match="not cached and could not be downloaded"):
        _with_imagenet_weights(get_spec("resnet18"))
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""


def test_compiling_on_a_cpu_says_nothing_of_cuda(tmp_path):
    if shutil.which("g++") is None and shutil.which("clang++") is None:
        pytest.skip("compiling needs a C++ compiler")
    toolkit = tmp_path / "cuda"
    toolkit.mkdir()  # a CUDA toolkit without a GPU: torch's warning case
    code = "from dfx.engine.device import resolve_placement; resolve_placement('cpu', 'auto', True)"
    env = os.environ | {"CUDA_HOME": str(toolkit), "CUDA_VISIBLE_DEVICES": "",
                        "PATH": "/usr/bin:/bin"}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "CUDA" not in done.stderr and done.stdout == ""


# Item 13: a contact sheet of a 7×3000 strip.


def test_the_contact_sheet_of_a_thin_strip_shows_every_panel(trained):
    from dfx.engine.explain import Explanation
    from dfx.engine.predictions import Prediction
    from dfx.overlays import MAX_PANEL_ASPECT, PANEL_SIDE, contact_sheet

    image = Image.fromarray(np.full((3000, 7, 3), (200, 20, 20), dtype=np.uint8))
    heat = np.linspace(0, 1, 3000 * 7, dtype=np.float32).reshape(3000, 7)
    prediction = Prediction("strip.png", "gan", {"dm": 0.1, "gan": 0.8, "real": 0.1}, 0.9,
                            fake=True)  # fmt: skip
    maps, shares = {c: heat for c in CLASSES}, {c: 1 / 3 for c in CLASSES}
    explanation = Explanation("strip.png", prediction, "gan", "gradcam", maps, shares, (7, 3000))
    sheet = np.asarray(contact_sheet(image, explanation, 0.5))
    row = sheet[30 + PANEL_SIDE // 2]  # across the middle of the panels
    red = (row[:, 0] > 150) & (row[:, 1] < 120)  # the strip and its overlays' cold end
    assert red.sum() >= 4 * (PANEL_SIDE // MAX_PANEL_ASPECT) * 0.5  # four panels, each visible
    assert sheet.shape[1] >= 4 * PANEL_SIDE


# The 1×1 image: a warning in the record and on stderr.


def test_an_image_far_below_the_input_size_carries_a_warning(trained, inputs):
    result = invoke("predict", "-M", trained["model"], inputs["tiny"], inputs["png"], "--json",
                    *CPU)  # fmt: skip
    assert result.exit_code == 0, result.output
    tiny, normal = [json.loads(line) for line in result.stdout.splitlines()]
    assert "1×1 pixels" in tiny["warning"] and normal["warning"] is None
    assert str(inputs["tiny"]) in result.stderr and "warning" in result.stderr
    assert str(inputs["png"]) not in result.stderr


# Under -q, every command's stdout is results only.


def _official_base(tmp_path: Path) -> Path:
    from tests.test_official import official_base_model

    path = tmp_path / "official-res18.pt"
    torch.save(official_base_model(0).state_dict(), path)
    return path


def _every_command(trained, data_dir, tmp_path, inputs) -> dict[str, tuple[list, str]]:
    """Each command with its results on stdout: the arguments and what stdout must be."""
    model, manifest = trained["model"], trained["manifest"]
    base = trained["base"]["dm"].path.parent
    image = inputs["png"]
    official = _official_base(tmp_path)
    report = tmp_path / "eval.json"
    evaluated = invoke("evaluate", "-M", model, "-m", manifest, *CPU, "--json")
    report.write_text(evaluated.stdout)
    return {
        "backbones": (["backbones"], "tsv"),
        "split": (["split", data_dir, "--out", tmp_path / "m.csv", "--json"], "json"),
        "audit": (["audit", data_dir, "--plots", tmp_path / "plots", "--json"], "json"),
        "train-base": (["train-base", "-m", manifest, "-t", "gan", *TINY_RUN, "-o",
                        tmp_path / "b", "--json"], "json"),
        "train-fusion": (["train-fusion", "-m", manifest, "--base-dir", base, "--epochs", "1",
                          "-o", tmp_path / "f.pt", *CPU, "--json"], "json"),
        "train-baseline": (["train-baseline", "-m", manifest, *TINY_RUN, "-o",
                            tmp_path / "l.pt", "--json"], "json"),
        "evaluate": (["evaluate", "-M", model, "-m", manifest, *CPU, "--csv"], "csv"),
        "jpeg-robustness": (["jpeg-robustness", "-M", model, "-m", manifest, "--qf", "50", *CPU,
                             "--json"], "json"),
        "robustness": (["robustness", "-M", model, "-m", manifest, "-p", "mirror", *CPU,
                        "--json"], "json"),
        "predict": (["predict", "-M", model, image, *CPU], "tsv"),
        "explain": (["explain", "-M", model, image, "-o", tmp_path / "x", *CPU], "tsv"),
        "export": (["export", "-M", model, "--out", tmp_path / "m.onnx", "--json"], "json"),
        "import-official": (["import-official", "-b", "resnet18", "--dm", official, "--gan",
                             official, "--real", official, "--out", tmp_path / "official",
                             "--image-size", "64", "--json"], "json"),
        "card": (["card", "--model", model, "--repo", "lab/x", "--results", report, "--out",
                  tmp_path / "card.md"], "empty"),
        "demo": (["demo", "--out", tmp_path / "demo", "--per-generator", "10", "--base-epochs",
                  "1", "--fusion-epochs", "1", "--device", "cpu"], "text"),
    }  # fmt: skip


def _results_only(kind: str, stdout: str) -> None:
    if kind == "json":
        try:
            json.loads(stdout)
        except json.JSONDecodeError:  # JSON Lines
            assert all(json.loads(line) for line in stdout.splitlines()), stdout
    elif kind in ("tsv", "csv"):
        separator = "\t" if kind == "tsv" else ","
        lines = stdout.splitlines()
        assert lines and len({line.count(separator) for line in lines}) == 1, stdout
    elif kind == "empty":
        assert stdout == ""
    for line in stdout.splitlines():
        assert not line.startswith(("wrote ", "Downloading", "warning:", "notice:")), line


def test_quiet_leaves_results_alone_on_stdout_for_every_command(
    trained, data_dir, tmp_path, inputs
):
    from dfx.cli import app

    names = {command.name for command in app.registered_commands}
    runs = _every_command(trained, data_dir, tmp_path, inputs)
    assert names - set(runs) == {"serve"}  # serve's stdout is uvicorn's; docs/serve.md
    for name, (args, kind) in runs.items():
        result = invoke("-q", *args)
        assert result.exit_code == 0, (name, result.output)
        assert result.stderr == "", (name, result.stderr)
        _results_only(kind, result.stdout)


# Item 11: the demo figures the docs quote come from benchmarks/demo_figures.py.


def test_the_docs_quote_the_figures_of_the_demo_run():
    """docs/demo-figures.json is ``benchmarks/demo_figures.py --json``; the docs quote it."""
    root = Path(__file__).resolve().parents[1]
    figures = json.loads((root / "docs" / "demo-figures.json").read_text())
    demo = (root / "docs" / "demo.md").read_text()
    usage = (root / "docs" / "usage.md").read_text()
    readme = " ".join((root / "README.md").read_text().split())
    totals = figures["split_totals"]
    assert f"| **all** | | {totals['base']} | {totals['fusion']} | {totals['test']} |" in demo
    for row in figures["split"]:
        cells = " | ".join(str(row[role]) for role in ("base", "fusion", "test"))
        assert f"| {row['label']} | {row['generator']} | {cells} |" in demo
    assert f'"n": {figures["test"]["n"]},' in usage
    accuracy = f"{100 * figures['test']['accuracy']:.1f}%"
    assert accuracy in demo and accuracy in readme
    assert figures["cpu"] in demo and figures["cpu"] in readme
