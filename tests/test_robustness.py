"""Robustness runs, forensic reports, plots, generalization tables and baselines, via the CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image

import dfx
from dfx.data.manifest import read_manifest
from dfx.report import METRIC_COLUMNS
from tests.compare import assert_same_up_to_rounding
from tests.helpers import assert_user_error, invoke

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FAST = ["--device", "cpu", "--workers", "0"]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder below ``folder`` with its content hash (folders: "dir")."""
    return {
        str(p.relative_to(folder)): "dir"
        if p.is_dir()
        else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
    }


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    with Image.open(path) as image:
        image.verify()
        assert image.format == "PNG"


def test_jpeg_robustness_rows_files_and_untouched_data(trained, tmp_path):
    data = trained["manifest"].parent / "data"
    before = snapshot(data)
    report, table, plot = tmp_path / "r.json", tmp_path / "r.csv", tmp_path / "r.png"
    result = invoke(
        "jpeg-robustness",
        "--model",
        trained["model"],
        "-m",
        trained["manifest"],
        "-o",
        report,
        "-o",
        table,
        "--plot",
        plot,
        *FAST,
    )
    assert result.exit_code == 0, result.output
    assert snapshot(data) == before  # nothing written beside (or into) the data
    rows = json.loads(report.read_text())["rows"]
    assert [row["qf"] for row in rows] == [None, 90, 80, 70, 60, 50]
    assert [row["perturbation"] for row in rows][:2] == ["raw", "jpeg:90"]
    assert len({row["n"] for row in rows}) == 1
    raw, last = rows[0], rows[-1]
    assert last["multiclass"]["accuracy"] <= raw["multiclass"]["accuracy"]
    assert {"accuracy", "f1", "ap", "auc", "eer", "at_threshold"} <= set(raw["binary"])
    lines = table.read_text().splitlines()
    assert len(lines) == 7 and lines[0].startswith("perturbation,qf,n,multiclass.accuracy")
    assert_png(plot)
    assert "JPEG robustness on" in result.stdout and "jpeg:50" in result.stdout


def test_jpeg_robustness_matches_evaluate_at_the_same_quality(trained):
    robust = invoke(
        "jpeg-robustness",
        "--model",
        trained["model"],
        "-m",
        trained["manifest"],
        "--qf",
        "70",
        "--json",
        *FAST,
    )
    assert robust.exit_code == 0, robust.output
    raw, at_70 = json.loads(robust.stdout)["rows"]
    for qf, row in ((None, raw), ("70", at_70)):
        options = ["--qf", qf] if qf else []
        single = invoke(
            "evaluate",
            "--model",
            trained["model"],
            "-m",
            trained["manifest"],
            *options,
            "--json",
            *FAST,
        )
        evaluated = json.loads(single.stdout)
        assert evaluated["multiclass"]["confusion"] == row["multiclass"]["confusion"]
        # jpeg-robustness batches every variant of an image together, evaluate one variant:
        # equal decisions, and an AUC within the tolerance of tests/compare.py.
        assert_same_up_to_rounding(evaluated["binary"]["auc"], row["binary"]["auc"], "auc")


def test_robustness_spec_rows_and_csv_to_stdout(trained):
    result = invoke(
        "robustness",
        "--model",
        trained["model"],
        "-m",
        trained["manifest"],
        "-p",
        "jpeg:60 blurk:3",
        "-p",
        "mirror rotate:45",
        "--csv",
        *FAST,
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split(",")[0] for line in lines] == [
        "perturbation",
        "raw",
        "jpeg:60",
        "blurk:3",
        "mirror",
        "rotate:45",
    ]
    assert [line.split(",")[1] for line in lines[1:]] == ["", "60", "", "", ""]
    # Every metric column is there, in a fixed order, whatever the data defines.
    assert lines[0].split(",")[-len(METRIC_COLUMNS) :] == list(METRIC_COLUMNS)


def test_robustness_errors(trained):
    assert_user_error(
        invoke(
            "robustness", "--model", trained["model"], "-m", trained["manifest"], "-p", "zoom:2"
        ),
        "unknown perturbation 'zoom:2'",
    )
    assert_user_error(invoke("jpeg-robustness", "--model", trained["model"]), "exactly one of")
    bad_qf = invoke(
        "jpeg-robustness", "--model", trained["model"], "-m", trained["manifest"], "--qf", "0"
    )
    assert bad_qf.exit_code == 2


def test_unwritable_outputs_fail_before_any_work(trained, tmp_path, monkeypatch):
    import dfx.api

    def must_not_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the outputs were checked")

    monkeypatch.setattr(dfx.api, "load_detector", must_not_load)
    source = ["--model", trained["model"], "-m", trained["manifest"]]
    folder = tmp_path / "table.csv"
    folder.mkdir()
    assert_user_error(
        invoke("jpeg-robustness", *source, "-o", folder), f"cannot write {folder}", "a folder"
    )
    a_file = tmp_path / "taken"
    a_file.write_text("")
    assert_user_error(invoke("evaluate", *source, "--plots", a_file), "a folder is needed")


def test_evaluate_plots_and_threshold_override(trained, tmp_path):
    result = invoke(
        "evaluate",
        "--model",
        trained["model"],
        "-m",
        trained["manifest"],
        "--plots",
        tmp_path / "plots",
        "--threshold",
        "0.999",
        *FAST,
    )
    assert result.exit_code == 0, result.output
    for name in ("confusion.png", "roc.png", "pr.png"):
        assert_png(tmp_path / "plots" / name)
    points = json.loads((tmp_path / "plots" / "curves.json").read_text())
    assert points["roc"]["fpr"][0] == 0.0 and points["roc"]["tpr"][-1] == 1.0
    assert len(points["pr"]["precision"]) == len(points["pr"]["recall"])
    assert points["threshold"] == {"value": 0.999, "source": "option"}
    assert "threshold t = 0.999, --threshold" in " ".join(result.stdout.split())

    detector = dfx.load_detector(trained["model"], device="cpu")
    calibrated = detector.threshold
    stored = detector.model_file.metrics["threshold"]
    assert 0.0 <= calibrated <= 1.0 and stored["rule"] == "max balanced accuracy on validation"
    as_json = json.loads(
        invoke(
            "evaluate",
            "--model",
            trained["model"],
            "-m",
            trained["manifest"],
            "--json",
            "--threshold",
            "1.0",
            *FAST,
        ).stdout
    )
    # At t = 1 almost nothing is called fake: real images are all right, fakes mostly wrong.
    assert as_json["binary"]["at_threshold"]["real_accuracy"] == 1.0
    assert as_json["binary"]["at_threshold"]["fake_accuracy"] < 0.5


def binary_set(data: Path, root: Path, sources: dict[str, str], count: int) -> Path:
    """A 0_real/1_fake copy of a few images of the synthetic set."""
    for source, target in sources.items():
        (root / target).mkdir(parents=True, exist_ok=True)
        for path in sorted((data / source).iterdir())[:count]:
            (root / target / path.name).write_bytes(path.read_bytes())
    return root


def test_evaluate_several_sets_gives_one_row_each(trained, tmp_path):
    data = trained["manifest"].parent / "data"
    gan = binary_set(
        data, tmp_path / "gan-set", {"real/photo": "0_real", "gan/toygan-b": "1_fake"}, 8
    )
    dm = binary_set(
        data, tmp_path / "dm-set", {"real/texture": "0_real", "dm/toydm-b": "1_fake"}, 6
    )
    report = tmp_path / "t4.json"
    result = invoke(
        "evaluate",
        "--model",
        trained["model"],
        "--data",
        gan,
        "--data",
        dm,
        "--data",
        data,
        "-o",
        report,
        "-o",
        tmp_path / "t4.csv",
        "--plots",
        tmp_path / "plots",
        *FAST,
    )
    assert result.exit_code == 0, result.output
    document = json.loads(report.read_text())
    assert [s["name"] for s in document["sets"]] == ["gan-set", "dm-set", "data"]
    assert [s["n"] for s in document["sets"]][:2] == [16, 12]
    assert document["sets"][2]["multiclass"] is not None  # class layout keeps 3-class metrics
    accuracies = [s["binary"]["accuracy"] for s in document["sets"]]
    assert document["mean"]["accuracy"] == pytest.approx(sum(accuracies) / 3)
    csv_lines = (tmp_path / "t4.csv").read_text().splitlines()
    assert len(csv_lines) == 4 and csv_lines[0].startswith("name,data,n,qf")
    columns = csv_lines[0].split(",")
    # Sets without 3-class labels leave those cells empty; no stray "multiclass" column.
    assert "multiclass" not in columns and "multiclass.accuracy" in columns
    assert_png(tmp_path / "plots" / "gan-set" / "roc.png")
    assert "Binary metrics per data set" in result.stdout and "dm-set" in result.stdout


def test_tables_fit_80_columns_and_respect_no_color(trained):
    result = invoke(
        "jpeg-robustness",
        "--model",
        trained["model"],
        "-m",
        trained["manifest"],
        *FAST,
        env={"COLUMNS": "80", "NO_COLOR": "1"},
    )
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    assert "\x1b[" not in result.stdout
    assert "…" not in result.stdout  # no header or number was cut short

    from dfx.cli.console import stdout

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NO_COLOR", "1")
        patch.setenv("FORCE_COLOR", "")
        assert stdout().no_color


def test_rendered_robustness_table():
    from rich.console import Console

    from dfx.cli.tables import forensic_table, summary_table

    binary = {
        "accuracy": 0.9,
        "f1": 0.91,
        "ap": 0.95,
        "auc": 0.96,
        "eer": 0.08,
        "balanced_accuracy": 0.89,
        "real_accuracy": 0.85,
        "fake_accuracy": 0.93,
        "at_threshold": {"accuracy": 0.92, "real_accuracy": 0.9, "fake_accuracy": 0.94},
    }
    multiclass = {"accuracy": 0.8, "f1_macro": 0.79}
    console = Console(width=80, record=True, color_system=None, force_terminal=False)
    console.print(summary_table([("raw", multiclass, binary), ("jpeg:50", None, binary)], "T"))
    console.print(forensic_table([("raw", binary)], {"value": 0.4, "source": "model"}, "F"))
    expected = """\
T
┏━━━━━━━━━┳━━━━━━━━━┳━━━━━━━━━┳━━━━━━━━┳━━━━━━━━┳━━━━━━━┳━━━━━━━┓
┃         ┃ 3-class ┃ 3-class ┃ binary ┃ binary ┃       ┃       ┃
┃         ┃     acc ┃      F1 ┃    acc ┃     F1 ┃    AP ┃   AUC ┃
┡━━━━━━━━━╇━━━━━━━━━╇━━━━━━━━━╇━━━━━━━━╇━━━━━━━━╇━━━━━━━╇━━━━━━━┩
│ raw     │   80.00 │   79.00 │  90.00 │  91.00 │ 95.00 │ 96.00 │
│ jpeg:50 │       — │       — │  90.00 │  91.00 │ 95.00 │ 96.00 │
└─────────┴─────────┴─────────┴────────┴────────┴───────┴───────┘
F (threshold t = 0.4, calibrated), %
┏━━━━━┳━━━━━━━┳━━━━━━━┳━━━━━━━┳━━━━━━┳━━━━━━━┳━━━━━━━┳━━━━━━━┓
┃     ┃  real ┃  fake ┃  bal. ┃      ┃   acc ┃  real ┃  fake ┃
┃     ┃   acc ┃   acc ┃   acc ┃  EER ┃   @ t ┃   @ t ┃   @ t ┃
┡━━━━━╇━━━━━━━╇━━━━━━━╇━━━━━━━╇━━━━━━╇━━━━━━━╇━━━━━━━╇━━━━━━━┩
│ raw │ 85.00 │ 93.00 │ 89.00 │ 8.00 │ 92.00 │ 90.00 │ 94.00 │
└─────┴───────┴───────┴───────┴──────┴───────┴───────┴───────┘
"""
    rendered = "\n".join(line.rstrip() for line in console.export_text().splitlines())
    assert rendered + "\n" == expected


@pytest.fixture(scope="module")
def baseline(trained, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("baseline") / "baseline.pt"
    result = invoke(
        "train-baseline",
        "-m",
        trained["manifest"],
        "--backbone",
        "tiny",
        "--weights",
        "none",
        "--image-size",
        "32",
        "--epochs",
        "2",
        "--lr",
        "1e-3",
        "--out",
        out,
        "--json",
        *FAST,
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    rows = read_manifest(trained["manifest"], check_files=False).rows
    training_rows = sum(row.role in ("base", "fusion") for row in rows)
    assert report["counts"]["train"] + report["counts"]["val"] == training_rows
    assert 0 <= report["threshold"]["value"] <= 1
    return out


def test_baseline_file_works_wherever_a_detector_does(baseline, trained):
    detector = dfx.load_detector(baseline, device="cpu")
    assert detector.model_file.architecture == "baseline"
    assert detector.threshold == detector.model_file.metrics["threshold"]["value"]
    evaluated = invoke("evaluate", "--model", baseline, "-m", trained["manifest"], "--json", *FAST)
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["threshold"]["source"] == "model"
    image = sorted((trained["manifest"].parent / "data" / "gan" / "toygan-a").iterdir())[0]
    predicted = invoke("predict", "--model", baseline, image, "--json")
    assert json.loads(predicted.stdout)["label"] in dfx.CLASSES
    robust = invoke(
        "robustness",
        "--model",
        baseline,
        "-m",
        trained["manifest"],
        "-p",
        "resize:0.5",
        "--json",
        *FAST,
    )
    assert [row["perturbation"] for row in json.loads(robust.stdout)["rows"]] == [
        "raw",
        "resize:0.5",
    ]


def test_detector_files_without_new_fields_still_load(trained, tmp_path):
    """Files written before architecture and threshold existed load as fusion detectors."""
    import torch

    payload = torch.load(trained["model"], weights_only=True)
    payload.pop("architecture")
    payload["metrics"].pop("threshold")
    old = tmp_path / "old.pt"
    torch.save(payload, old)
    detector = dfx.load_detector(old, device="cpu")
    assert detector.model_file.architecture == "deepfeaturex" and detector.threshold is None
    result = invoke("evaluate", "--model", old, "-m", trained["manifest"], "--json", *FAST)
    assert json.loads(result.stdout)["threshold"] == {"value": 0.5, "source": "default"}


def test_unreadable_image_is_left_out_of_every_row(trained, tmp_path):
    data = trained["manifest"].parent / "data"
    folder = binary_set(
        data, tmp_path / "set", {"real/photo": "0_real", "gan/toygan-a": "1_fake"}, 5
    )
    (folder / "1_fake" / "broken.png").write_bytes(PNG_SIGNATURE + b"\0" * 30)
    result = invoke(
        "jpeg-robustness",
        "--model",
        trained["model"],
        "--data",
        folder,
        "--no-balanced",
        "--qf",
        "50",
        "--json",
        *FAST,
    )
    assert result.exit_code == 1, result.output
    document = json.loads(result.stdout)
    assert [row["n"] for row in document["rows"]] == [10, 10]
    assert all(row["multiclass"] is None for row in document["rows"])
    assert [f["path"] for f in document["failures"]] == [str(folder / "1_fake" / "broken.png")]
    assert "unreadable image" in result.stderr
