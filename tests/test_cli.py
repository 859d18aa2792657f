"""Every command through Typer's CliRunner: outputs, files, exit codes and error sentences."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.compare import ABS_TOLERANCE, assert_same_up_to_rounding
from tests.helpers import COMMANDS, TINY_RUN, assert_user_error, evaluate_test_split, invoke


def test_help_lists_every_command_with_examples():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.stdout
    for command in COMMANDS[:-1]:
        page = invoke(command, "--help")
        assert page.exit_code == 0
        assert "Examples" in page.stdout, command


def test_version():
    from dfx import __version__

    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"dfx {__version__}"


def test_backbones_lists_the_registry_as_json():
    result = invoke("backbones", "--json")
    rows = json.loads(result.stdout)
    assert {row["name"] for row in rows} >= {"densenet121", "vit_b_16", "tiny"}
    assert next(r for r in rows if r["name"] == "vit_b_16")["crop"] == 224
    assert next(r for r in rows if r["name"] == "resnet50")["attribution_layer"] == "layer4"


def test_split_writes_a_manifest_and_prints_counts(data_dir, tmp_path):
    out = tmp_path / "m.csv"
    result = invoke("split", data_dir, "--out", out)
    assert result.exit_code == 0, result.output
    assert "Images per role" in result.stdout and "600" in result.stdout
    assert out.read_text().splitlines()[1] == "path,label,generator,split,size,hash"
    as_json = invoke("split", data_dir, "--out", tmp_path / "n.csv", "--json")
    counts = json.loads(as_json.stdout)["counts"]
    assert sum(c["n"] for c in counts) == 600
    assert out.read_text().splitlines()[2:] == (tmp_path / "n.csv").read_text().splitlines()[2:]


def test_split_errors(tmp_path):
    assert_user_error(invoke("split", tmp_path / "absent"), "does not exist")
    (tmp_path / "empty").mkdir()
    assert_user_error(invoke("split", tmp_path / "empty"), "neither class folders")
    assert invoke("split", tmp_path, "--ratios", "0.5", "0.5").exit_code == 2


def test_train_base_writes_a_model_and_table_1(manifest_path, tmp_path):
    result = invoke(
        "train-base",
        "-m",
        manifest_path,
        "--target",
        "gan",
        *TINY_RUN,
        "--out",
        tmp_path,
        "--json",
    )
    assert result.exit_code == 0, result.output
    (model,) = json.loads(result.stdout)["models"]
    assert model["target"] == "gan" and Path(model["path"]).is_file()
    assert set(model["test"]) == {"accuracy", "recall", "precision", "f1"}
    assert (tmp_path / "gan.history.jsonl").read_text().count("\n") == 1


def test_train_base_errors(manifest_path, tmp_path):
    assert_user_error(
        invoke("train-base", "-m", manifest_path, "--backbone", "resnet9000"),
        "unknown backbone 'resnet9000'",
        "densenet121",
        "vit_b_32",
    )
    assert_user_error(invoke("train-base", "-m", manifest_path, "--target", "cat"), "target 'cat'")
    assert_user_error(invoke("train-base", "-m", tmp_path / "none.csv"), "does not exist")
    assert_user_error(
        invoke(
            "train-base",
            "-m",
            manifest_path,
            "--backbone",
            "tiny",
            "--weights",
            tmp_path / "nothing.pth",
        ),
        "no such file",
    )


def test_train_fusion_writes_a_detector(trained, tmp_path):
    base_dir = trained["base"]["dm"].path.parent
    out = tmp_path / "det.pt"
    result = invoke(
        "train-fusion",
        "-m",
        trained["manifest"],
        "--base-dir",
        base_dir,
        "--epochs",
        "2",
        "--out",
        out,
        "--device",
        "cpu",
        "--workers",
        "0",
    )
    assert result.exit_code == 0, result.output
    assert out.is_file() and "Fusion model on its validation features" in result.stdout
    assert out.with_suffix(".history.jsonl").read_text().count("\n") == 2


def test_train_fusion_errors(trained, tmp_path):
    assert_user_error(invoke("train-fusion", "-m", trained["manifest"]), "--base-dir")
    assert_user_error(
        invoke("train-fusion", "-m", trained["manifest"], "--base-dir", tmp_path),
        "does not exist",
    )
    base = trained["base"]
    assert_user_error(
        invoke(
            "train-fusion",
            "-m",
            trained["manifest"],
            "--dm",
            base["gan"].path,
            "--gan",
            base["gan"].path,
            "--real",
            base["real"].path,
        ),
        "base model for 'gan', not 'dm'",
    )


def test_evaluate_json_contract_and_thresholds(trained, tmp_path):
    report = tmp_path / "report.json"
    result = evaluate_test_split(
        trained,
        "-o",
        report,
        "--device",
        "cpu",
        "--workers",
        "0",
    )
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert {"n", "qf", "multiclass", "binary", "per_generator"} <= set(data)
    assert set(data["multiclass"]) == {"accuracy", "f1_macro", "confusion"}
    assert set(data["binary"]) == {
        "accuracy",
        "f1",
        "ap",
        "auc",
        "eer",
        "balanced_accuracy",
        "real_accuracy",
        "fake_accuracy",
        "at_threshold",
    }
    assert data["threshold"]["source"] == "model"
    assert data["binary"]["at_threshold"]["threshold"] == data["threshold"]["value"]
    assert set(data["generators"]) == set(data["per_generator"])
    assert data["qf"] is None and data["n"] == sum(map(sum, data["multiclass"]["confusion"]))
    assert all(0 <= v <= 1 for v in data["per_generator"].values())
    assert "Accuracy per generator" in result.stdout

    failing = evaluate_test_split(
        trained,
        "--min-accuracy",
        "0.999",
        "--workers",
        "0",
    )
    assert failing.exit_code == 1 and "below --min-accuracy" in failing.stderr
    passing = evaluate_test_split(
        trained,
        "--min-accuracy",
        "0.4",
        "--workers",
        "0",
    )
    assert passing.exit_code == 0


def test_evaluate_applies_jpeg_in_memory(trained):
    data = trained["manifest"].parent / "data"
    before = {p: p.stat().st_mtime_ns for p in data.rglob("*")}
    result = evaluate_test_split(
        trained,
        "--qf",
        "50",
        "--json",
        "--workers",
        "0",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["qf"] == 50
    assert {p: p.stat().st_mtime_ns for p in data.rglob("*")} == before


def test_evaluate_binary_layout(trained, tmp_path):
    data = trained["manifest"].parent / "data"
    binary = tmp_path / "wang" / "toyset"
    for source, target in (
        ("real/photo", "0_real"),
        ("gan/toygan-a", "1_fake"),
        ("dm/toydm-a", "1_fake"),
    ):
        (binary / target).mkdir(parents=True, exist_ok=True)
        for path in sorted((data / source).iterdir())[:10]:
            (binary / target / path.name).write_bytes(path.read_bytes())
    result = invoke(
        "evaluate",
        "--model",
        trained["model"],
        "--data",
        tmp_path / "wang",
        "--json",
        "--workers",
        "0",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["multiclass"] is None and report["counts"] == {"fake": 10, "real": 10}
    assert set(report["per_generator"]) == {"fake/toyset", "real/toyset"}


def test_evaluate_errors(trained):
    base_model = trained["base"]["dm"].path
    assert_user_error(
        invoke("evaluate", "--model", base_model, "-m", trained["manifest"]),
        "base-model file, but a detector file",
    )
    assert_user_error(invoke("evaluate", "--model", trained["model"]), "exactly one of")
    assert_user_error(
        invoke("evaluate", "--model", trained["manifest"], "-m", trained["manifest"]),
        "loads safely",
    )


@pytest.fixture()
def images(trained, tmp_path) -> dict[str, Path]:
    data = trained["manifest"].parent / "data"
    good = sorted((data / "gan" / "toygan-a").iterdir())[:3]
    folder = tmp_path / "folder"
    folder.mkdir()
    for path in sorted((data / "real" / "photo").iterdir())[:2]:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "readme.txt").write_text("skipped: not an image")
    broken = tmp_path / "broken.png"
    broken.write_bytes(good[0].read_bytes()[:100])
    return {"good": good, "folder": folder, "broken": broken}


def test_predict_json_lines_contract(trained, images):
    result = invoke(
        "predict", "--model", trained["model"], *images["good"], images["folder"], "--json"
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 5
    for record in records:
        assert set(record) == {
            "path", "label", "probs", "p_fake", "fake", "provenance", "warning", "error"
        }  # fmt: skip
        assert record["label"] in ("dm", "gan", "real") and record["error"] is None
        assert set(record["probs"]) == {"dm", "gan", "real"}
        assert abs(sum(record["probs"].values()) - 1) < 1e-5
        assert abs(record["p_fake"] - record["probs"]["dm"] - record["probs"]["gan"]) < 1e-6


def test_predict_bad_file_is_reported_and_skipped(trained, images):
    paths = [images["good"][0], images["broken"], "missing.png", images["good"][1]]
    result = invoke("predict", "--model", trained["model"], *paths, "--json")
    assert result.exit_code == 1
    records = [json.loads(line) for line in result.stdout.splitlines()]
    by_path = {r["path"]: r for r in records}
    assert by_path[str(images["broken"])].keys() == {"path", "error"}
    assert by_path["missing.png"]["error"] == "no such file or folder"
    assert by_path[str(images["good"][1])]["label"] in ("dm", "gan", "real")


def test_predict_reads_paths_from_stdin_and_model_from_env(trained, images):
    lines = "\n".join(str(p) for p in images["good"]) + "\n"
    result = invoke("predict", "-", "--json", input=lines, env={"DFX_MODEL": str(trained["model"])})
    assert result.exit_code == 0, result.output
    assert [json.loads(x)["path"] for x in result.stdout.splitlines()] == [
        str(p) for p in images["good"]
    ]
    table = invoke("predict", images["good"][0], env={"DFX_MODEL": str(trained["model"])})
    assert table.exit_code == 0 and "p_fake" in table.stdout


def test_predict_table_shows_the_decision_at_the_threshold(trained, images):
    decisions = {}
    for threshold in ("0", "1"):
        result = invoke("predict", "--model", trained["model"], *images["good"],
                        "--threshold", threshold)  # fmt: skip
        assert result.exit_code == 0, result.output
        # Not a terminal: tab-separated lines under a header; "fake" is the 7th column.
        header, *rows = [line.split("\t") for line in result.stdout.splitlines()]
        assert header[6] == "fake"
        decisions[threshold] = [row[6] for row in rows]
    assert decisions == {"0": ["yes"] * 3, "1": ["no"] * 3}


def test_a_closed_pipe_ends_predict_quietly(trained, images):
    """``dfx predict --json ... | head -1``: no error sentence, no traceback, exit 141.

    The reading end is closed before dfx writes anything, so the pipe is broken whatever the
    output's size (a small output would otherwise fit the pipe's buffer and never break it).
    """
    command = [sys.executable, "-m", "dfx", "predict", "--model", str(trained["model"]),
               *map(str, images["good"][:2]), "--json", "--workers", "0"]  # fmt: skip
    read_end, write_end = os.pipe()
    os.close(read_end)  # as head does once it has its line
    try:
        process = subprocess.run(
            command, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120
        )
    finally:
        os.close(write_end)
    errors = process.stderr
    assert process.returncode == 141, errors
    assert "rror" not in errors and "Traceback" not in errors, errors


def test_device_out_of_memory_is_a_user_error(trained, images, monkeypatch):
    import torch

    from dfx.api import Detector

    def exhausted(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(Detector, "iter_predict", exhausted)
    result = invoke("predict", "--model", trained["model"], images["good"][0])
    assert_user_error(result, "ran out of memory", "--batch-size")


def test_predict_errors(tmp_path, images):
    assert_user_error(
        invoke("predict", "--model", tmp_path / "nope.pt", images["good"][0]), "does not exist"
    )
    not_a_model = tmp_path / "model.pt"
    not_a_model.write_bytes(b"garbage")
    assert_user_error(invoke("predict", "--model", not_a_model, images["good"][0]), "loads safely")


def test_demo_runs_end_to_end(demo_run, tmp_path):
    out, result = demo_run  # dfx demo --per-generator 12 --image-size 32, one epoch each
    assert result.exit_code == 0, result.output
    assert "SIMULATED" in result.stdout
    for name in (
        "manifest.csv",
        "base/dm.pt",
        "base/gan.pt",
        "base/real.pt",
        "model.pt",
        "evaluation.json",
    ):
        assert (out / name).is_file(), name
    assert len(list((out / "data").rglob("*.png"))) == 72
    sheets = sorted(p.name.split("-")[0] for p in (out / "explain").glob("*.sheet.png"))
    assert sheets == ["dm", "gan", "real"]  # one test image of each class

    # The numbers the demo wrote are those dfx evaluate computes on the same files.
    report = tmp_path / "again.json"
    again = invoke("evaluate", "--model", out / "model.pt", "-m", out / "manifest.csv",
                   "-o", report, "--device", "cpu", "--workers", "0")  # fmt: skip
    assert again.exit_code == 0, again.output
    demo_numbers, evaluate_numbers = (
        {k: v for k, v in json.loads(path.read_text()).items() if k in OUTCOME_KEYS}
        for path in (out / "evaluation.json", report)
    )
    assert set(demo_numbers) == OUTCOME_KEYS
    assert_same_up_to_rounding(demo_numbers, evaluate_numbers)

    # The six predictions it printed are the model's, in the demo's sample order.
    import dfx
    from dfx.data.labelled import images_from_manifest
    from dfx.data.manifest import read_manifest

    test_images = images_from_manifest(read_manifest(out / "manifest.csv"), "test")
    samples = [image.path for image in test_images[:: max(1, len(test_images) // 6)]][:6]
    detector = dfx.load_detector(out / "model.pt", device="cpu")
    position = 0
    for prediction in detector.predict(samples):
        for text in (prediction.label, f"{prediction.p_fake:.3f}"):
            position = result.stdout.index(text, position)


OUTCOME_KEYS = {"n", "counts", "multiclass", "binary", "per_generator"}
"""The numbers of an evaluation report (not its timings, paths or settings)."""


def test_unreadable_training_images_are_skipped(trained, tmp_path):
    """One corrupt file in the training set is reported and skipped, never fatal."""
    manifest = trained["manifest"]
    rows = manifest.read_text().splitlines()
    # A copy of the data folder, so that the session's shared one is never written to.
    data = shutil.copytree(manifest.parent / "data", tmp_path / "data")
    bad = data / "real" / "photo" / "zz-corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    copy = tmp_path / "m.csv"
    header = f"# dfx-manifest root={data.resolve()}"
    copy.write_text("\n".join([header, *rows[1:], "real/photo/zz-corrupt.png,real,photo,base"]))
    result = invoke(
        "train-base",
        "-m",
        copy,
        "--target",
        "real",
        *TINY_RUN,
        "--out",
        tmp_path / "b",
        "--negative-fraction",
        "0.1",
    )
    # The run finishes and writes its model, names the bad file, and exits 1.
    assert result.exit_code == 1, result.output
    assert "zz-corrupt.png" in "".join(result.stderr.split())  # a long path may wrap
    assert (tmp_path / "b" / "real.pt").is_file()


def test_rendered_prediction_table():
    from rich.console import Console

    from dfx.cli.tables import predictions_table

    console = Console(width=70, record=True, color_system=None, force_terminal=False)
    console.print(
        predictions_table(
            [
                {
                    "path": "a.png",
                    "label": "gan",
                    "probs": {"dm": 0.1, "gan": 0.85, "real": 0.05},
                    "p_fake": 0.95,
                    "fake": True,
                    "error": None,
                },
                {
                    "path": "c.png",
                    "label": "real",
                    "probs": {"dm": 0.2, "gan": 0.1, "real": 0.7},
                    "p_fake": 0.3,
                    "fake": False,
                    "error": None,
                },
                {"path": "b.png", "error": "not an image Pillow can decode"},
            ]
        )
    )
    expected = """\
┏━━━━━━━━━━━━━━━━━━━┳━━━━━━━┳━━━━━━━┳━━━━━━━┳━━━━━━━━┳━━━━━━━━┳━━━━━━┓
┃ path              ┃ label ┃  p_dm ┃ p_gan ┃ p_real ┃ p_fake ┃ fake ┃
┡━━━━━━━━━━━━━━━━━━━╇━━━━━━━╇━━━━━━━╇━━━━━━━╇━━━━━━━━╇━━━━━━━━╇━━━━━━┩
│ a.png             │ gan   │ 0.100 │ 0.850 │  0.050 │  0.950 │ yes  │
│ c.png             │ real  │ 0.200 │ 0.100 │  0.700 │  0.300 │ no   │
│ b.png             │ error │       │       │        │        │      │
│   not an image    │       │       │       │        │        │      │
│ Pillow can decode │       │       │       │        │        │      │
└───────────────────┴───────┴───────┴───────┴────────┴────────┴──────┘
"""
    assert console.export_text() == expected


def test_unwritable_output_is_one_sentence(data_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    result = invoke("split", data_dir, "--out", blocker / "m.csv")
    assert_user_error(result, str(blocker))


def test_rendered_per_generator_table():
    from rich.console import Console

    from dfx.cli.tables import per_generator_table

    console = Console(width=70, record=True, color_system=None, force_terminal=False)
    generators = {
        "gan/toygan-a": {"n": 22, "accuracy": 0.9091, "binary_accuracy": 0.95,
                         "binary_accuracy_at_threshold": 0.9},
        "real/photo": {"n": 3, "accuracy": 2 / 3, "binary_accuracy": 1.0,
                       "binary_accuracy_at_threshold": None},
    }  # fmt: skip
    console.print(per_generator_table(generators))
    expected = """\
Accuracy per generator (%)
┏━━━━━━━━━━━━━━━━━┳━━━━┳━━━━━━━━━━┳━━━━━━━━┳━━━━━━━━━┓
┃                 ┃    ┃          ┃ binary ┃  binary ┃
┃ class/generator ┃  n ┃ accuracy ┃    acc ┃ acc @ t ┃
┡━━━━━━━━━━━━━━━━━╇━━━━╇━━━━━━━━━━╇━━━━━━━━╇━━━━━━━━━┩
│ gan/toygan-a    │ 22 │    90.91 │  95.00 │   90.00 │
│ real/photo      │  3 │    66.67 │ 100.00 │       — │
└─────────────────┴────┴──────────┴────────┴─────────┘
"""
    assert [line.rstrip() for line in console.export_text().splitlines()] == expected.splitlines()


# --- predict keeps the input order when inputs are missing ---


def test_predict_keeps_input_order_when_inputs_are_missing(trained, tmp_path):
    import dfx

    data = trained["manifest"].parent / "data"
    images = [
        sorted((data / "real" / "photo").iterdir())[0],
        tmp_path / "missing-1.png",
        sorted((data / "gan" / "toygan-b").iterdir())[0],
        tmp_path / "missing-2.png",
        sorted((data / "dm" / "toydm-a").iterdir())[0],
    ]
    result = invoke("predict", "--model", trained["model"], *images, "--json", "--workers", "0")
    assert result.exit_code == 1, result.output  # missing inputs: reported, the rest predicted
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    # One line per input: the images in input order, then the inputs that name nothing
    # (docs/usage.md), each with its error instead of a label.
    order = [str(p) for p in images if p.exists()] + [str(p) for p in images if not p.exists()]
    assert [line["path"] for line in lines] == order
    assert [bool(line.get("error")) for line in lines] == [False] * 3 + [True] * 2
    lines = [line for line in lines if not line.get("error")]
    present = [str(p) for p in images if p.exists()]
    # The predictions are the model's.
    detector = dfx.load_detector(trained["model"], device="cpu")
    expected = detector.predict(present, batch_size=1, workers=0)
    for line, prediction in zip(lines, expected):
        assert line["label"] == prediction.label
        assert abs(line["p_fake"] - prediction.p_fake) <= ABS_TOLERANCE * 100
