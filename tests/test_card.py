"""dfx card: YAML front matter a Hub reader parses, then Markdown naming the file's metrics."""

from __future__ import annotations

import functools
import json

import pytest
import torch
import yaml

from dfx.fingerprint import file_sha256
from tests.helpers import assert_user_error, evaluate_test_split, invoke


def split_card(text: str) -> tuple[dict, str]:
    """The parsed YAML metadata and the Markdown body of a model card."""
    assert text.startswith("---\n")
    front, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(front), body


def index_values(metadata: dict, dataset: str) -> dict[str, float]:
    [entry] = metadata["model-index"]
    [result] = [r for r in entry["results"] if r["dataset"]["name"] == dataset]
    return {m["name"]: m["value"] for m in result["metrics"]}


def test_card_metadata_and_markdown(trained, tmp_path):
    report = tmp_path / "eval.json"
    assert evaluate_test_split(trained, "--device", "cpu", "-o", report).exit_code == 0
    out = tmp_path / "README.md"
    result = invoke(
        "card", "--model", trained["model"], "--repo", "lab/dfx-tiny",
        "--results", report, "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    metadata, body = split_card(out.read_text())

    assert metadata["pipeline_tag"] == "image-classification"
    assert metadata["library_name"] == "dfx"
    assert metadata["license"] == "mit"
    assert {"deepfeaturex", "tiny"} <= set(metadata["tags"])
    assert {"accuracy", "f1", "roc_auc", "average_precision", "eer"} <= set(metadata["metrics"])

    # The card's metadata holds 6 decimals.
    stored = torch.load(trained["model"], weights_only=True)["metrics"]["validation"]
    validation = index_values(metadata, "validation at training time")
    card = functools.partial(pytest.approx, abs=5e-7)
    assert validation["3-class accuracy"] == card(stored["multiclass"]["accuracy"])
    assert validation["ROC-AUC"] == card(stored["binary"]["auc"])
    evaluation = json.loads(report.read_text())
    measured = index_values(metadata, "eval")
    assert measured["3-class accuracy"] == card(evaluation["multiclass"]["accuracy"])
    assert measured["EER"] == card(evaluation["binary"]["eer"])

    for heading in ("## Model", "## Training data and configuration", "## Results",
                    "## Intended use and limitations", "## How to use"):  # fmt: skip
        assert f"\n{heading}\n" in body
    sha256 = file_sha256(trained["model"])
    assert f"dfx predict --model hf://lab/dfx-tiny/model.pt --sha256 {sha256}" in body
    assert f"{100 * stored['multiclass']['accuracy']:.2f}" in body
    assert "simulated" in body and "JPEG" in body and "Unseen generators" in body
    assert "| backbone | tiny |" in body

    to_stdout = invoke("card", "--model", trained["model"], "--repo", "lab/dfx-tiny",
                       "--results", report)  # fmt: skip
    assert to_stdout.stdout == out.read_text()


def test_card_of_a_file_with_the_old_validation_key(trained, tmp_path):
    """Fusion files of dfx 0.2.0 and before keep their validation under fusion_validation."""
    payload = torch.load(trained["model"], weights_only=True)
    metrics = payload["metrics"]
    payload["metrics"] = {
        ("fusion_validation" if key == "validation" else key): value
        for key, value in metrics.items()
    }
    old = tmp_path / "old.pt"
    torch.save(payload, old)
    result = invoke("card", "--model", old, "--repo", "lab/dfx-tiny")
    assert result.exit_code == 0, result.output
    metadata, _ = split_card(result.stdout)
    validation = index_values(metadata, "validation at training time")
    card = functools.partial(pytest.approx, abs=5e-7)
    assert validation["3-class accuracy"] == card(metrics["validation"]["multiclass"]["accuracy"])
    assert validation["ROC-AUC"] == card(metrics["validation"]["binary"]["auc"])


def test_card_refuses_what_it_cannot_describe(trained, tmp_path):
    base = trained["base"]["dm"].path
    assert_user_error(invoke("card", "--model", base), "a base-model file")
    junk = tmp_path / "junk.json"
    junk.write_text('{"hello": 1}')
    result = invoke("card", "--model", trained["model"], "--results", junk)
    assert_user_error(result, "not a result")
    assert_user_error(invoke("card", "--model", trained["model"], "--repo", "x"), "--repo")
