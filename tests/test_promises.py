"""Promises of the CLI and the library that no other test checks.

Exit code 3 and tracebacks only on request; --quiet; --val-fraction 0; reduced-precision
training; --compile; resume refusing changed images or settings in train-base; --max-pixels
and --allow-changed on training; a detector file with its classes permuted; the order of
predict's output when some inputs are missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dfx import synthetic
from dfx.data.manifest import make_manifest, write_manifest
from tests.compare import ABS_TOLERANCE
from tests.test_cli import TINY_RUN, assert_user_error, invoke

SUBPROCESS_TIMEOUT = 120


@pytest.fixture(scope="module")
def little_data(tmp_path_factory) -> Path:
    """A private 3 × 2 × 12-image data set and its manifest (tests may change the files)."""
    root = tmp_path_factory.mktemp("promises") / "data"
    synthetic.write_dataset(root, per_generator=12, image_size=32, seed=5)
    return write_manifest(make_manifest(root), root.parent / "manifest.csv")


def private_copy(manifest: Path, tmp_path: Path) -> Path:
    """A copy of the data folder and its manifest under ``tmp_path``; returns the manifest."""
    data = shutil.copytree(manifest.parent / "data", tmp_path / "data")
    return write_manifest(make_manifest(data), tmp_path / "manifest.csv")


# --- exit codes and tracebacks ---


def test_a_bug_exits_3_in_one_line_and_shows_its_traceback_only_with_debug(monkeypatch, tmp_path):
    import dfx.data.layout

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(dfx.data.layout, "scan_dataset", broken)
    (tmp_path / "data").mkdir()
    plain = invoke("split", tmp_path / "data")
    assert plain.exit_code == 3
    assert "internal error RuntimeError: boom" in plain.stderr
    assert "Traceback" not in plain.stderr and len(plain.stderr.strip().splitlines()) == 1
    debug = invoke("--debug", "split", tmp_path / "data")
    assert debug.exit_code == 3
    assert "Traceback" in debug.stderr and "RuntimeError: boom" in debug.stderr
    # --debug is per invocation: the next run without it is quiet again.
    again = invoke("split", tmp_path / "data")
    assert again.exit_code == 3 and "Traceback" not in again.stderr


@pytest.mark.parametrize("debug", ["", "1"])
def test_dfx_debug_environment_variable_shows_tracebacks(tmp_path, debug):
    env = (
        {**os.environ, "DFX_DEBUG": debug}
        if debug
        else {k: v for k, v in os.environ.items() if k != "DFX_DEBUG"}
    )
    run = subprocess.run(
        [sys.executable, "-m", "dfx", "split", str(tmp_path / "missing")],
        env=env, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT,
    )  # fmt: skip
    assert run.returncode == 2
    assert ("Traceback" in run.stderr) == bool(debug), run.stderr
    assert "missing" in run.stderr.strip().splitlines()[-1]


# --- --quiet and --val-fraction 0 ---


def test_quiet_silences_notices_and_val_fraction_0_fits_on_training_images(little_data, tmp_path):
    args = ["train-baseline", "-m", little_data, *TINY_RUN, "--val-fraction", "0", "--json"]
    loud = invoke(*args, "-o", tmp_path / "loud.pt")
    assert loud.exit_code == 0, loud.output
    assert "baseline:" in loud.stderr and " 0 val images" in loud.stderr
    quiet = invoke("--quiet", *args, "-o", tmp_path / "quiet.pt")
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stderr.strip() == ""
    assert json.loads(quiet.stdout).keys() == json.loads(loud.stdout).keys()

    payload = torch.load(tmp_path / "quiet.pt", weights_only=True)
    assert payload["metrics"]["counts"]["val"] == 0
    assert "training images" in payload["metrics"]["threshold"]["rule"]
    history = [json.loads(line) for line in (tmp_path / "quiet.history.jsonl").open()]
    assert [h["val_loss"] for h in history] == [None]  # no validation: null, not NaN or 0


# --- reduced precision and --compile ---


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_training_runs_on_cpu(little_data, tmp_path, monkeypatch, precision):
    scalers = []
    real_scaler = torch.amp.GradScaler

    def recording(*args, **kwargs):
        scaler = real_scaler(*args, **kwargs)
        scalers.append(scaler)
        return scaler

    monkeypatch.setattr(torch.amp, "GradScaler", recording)
    result = invoke(
        "train-baseline", "-m", little_data, *TINY_RUN, "--precision", precision,
        "-o", tmp_path / "model.pt",
    )  # fmt: skip
    if result.exit_code != 0 and "not supported" in (result.stderr or ""):
        pytest.skip(f"{precision} autocast is not available on this CPU build: {result.stderr}")
    assert result.exit_code == 0, result.output
    history = [json.loads(line) for line in (tmp_path / "model.history.jsonl").open()]
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in history)
    # fp16 needs loss scaling against underflow; bf16 has fp32's range and does not.
    assert [s.is_enabled() for s in scalers] == [precision == "fp16"]


def test_compile_gives_the_eager_results_within_rounding(trained, tmp_path):
    images = sorted((Path(trained["manifest"]).parent / "data" / "gan").rglob("*.png"))[:4]
    args = ["predict", "-M", trained["model"], "--device", "cpu", *images]
    eager = invoke(*args, "--json")
    assert eager.exit_code == 0, eager.output
    compiled = invoke(*args, "--compile", "--json")
    if compiled.exit_code != 0 and "compile" in compiled.stderr.lower():
        pytest.skip(f"torch.compile is not usable here: {compiled.stderr.strip()}")
    assert compiled.exit_code == 0, compiled.output
    for a, b in zip(eager.stdout.splitlines(), compiled.stdout.splitlines(), strict=True):
        a, b = json.loads(a), json.loads(b)
        assert a["path"] == b["path"] and a["label"] == b["label"] and a["fake"] == b["fake"]
        for name, p in a["probs"].items():
            assert abs(p - b["probs"][name]) < 1e-4, (a["path"], name)


# --- resume in train-base ---


def test_train_base_resume_refuses_changed_settings_or_images(little_data, tmp_path):
    out = tmp_path / "base"
    args = ["train-base", "-m", little_data, "--target", "gan", *TINY_RUN, "--out", out]
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    other_lr = invoke("--quiet", *args, "--resume", "--lr", "0.5")
    assert_user_error(other_lr, "cannot resume from", "lr 0.0001 then, 0.5 now")
    fewer = little_data.parent / "fewer.csv"
    lines = little_data.read_text().splitlines()
    # One gan image of the base role: a positive of the gan model, so its training set changes.
    dropped = next(i for i, line in enumerate(lines) if line.split(",")[1:4:2] == ["gan", "base"])
    kept = lines[:dropped] + lines[dropped + 1 :]
    fewer.write_text("\n".join(kept) + "\n")
    other_rows = invoke("--quiet", *[fewer if a == little_data else a for a in args], "--resume")
    assert_user_error(other_rows, "cannot resume from", "rows")


# --- --max-pixels and --allow-changed on training ---


@pytest.mark.parametrize("command", ["train-base", "train-baseline"])
def test_max_pixels_applies_to_training_images(little_data, tmp_path, command):
    target = ["--target", "dm"] if command == "train-base" else []
    out = tmp_path / ("base" if command == "train-base" else "model.pt")
    result = invoke(command, "-m", little_data, *target, *TINY_RUN, "--max-pixels", "1000",
                    "-o", out)  # fmt: skip
    assert result.exit_code in (1, 2), result.output  # 32 × 32 = 1024 pixels: every image refused
    # Named as too big where reported one by one, or as "no image could be read" at the end.
    assert "too many pixels" in result.stderr or "could be read" in result.stderr, result.stderr
    ok = invoke(command, "-m", little_data, *target, *TINY_RUN, "--max-pixels", "1024",
                "-o", out)  # fmt: skip
    assert ok.exit_code == 0, ok.output


def test_allow_changed_leaves_changed_training_images_out(little_data, tmp_path):
    manifest = private_copy(little_data, tmp_path)
    changed = next((manifest.parent / "data" / "real").rglob("*.png"))
    changed.write_bytes(next((manifest.parent / "data" / "gan").rglob("*.png")).read_bytes())
    args = ["train-baseline", "-m", manifest, *TINY_RUN, "-o", tmp_path / "model.pt"]
    refused = invoke(*args)
    assert_user_error(refused, "changed")
    allowed = invoke(*args, "--allow-changed")
    assert allowed.exit_code == 0, allowed.output
    assert changed.name in allowed.stderr
    counts = torch.load(tmp_path / "model.pt", weights_only=True)["metrics"]["counts"]
    roles = [line.split(",")[3] for line in manifest.read_text().splitlines()[2:]]
    assert counts["train"] + counts["val"] == sum(r in ("base", "fusion") for r in roles) - (
        1 if _role_of(manifest, changed) in ("base", "fusion") else 0
    )


def _role_of(manifest: Path, image: Path) -> str:
    relative = image.relative_to(manifest.parent / "data").as_posix()
    return next(
        line.split(",")[3]
        for line in manifest.read_text().splitlines()
        if line.startswith(relative)
    )


# --- detector files and predict ---


def test_a_detector_with_its_classes_permuted_is_refused(trained, tmp_path):
    import dfx
    from dfx.errors import DfxError

    payload = torch.load(trained["model"], weights_only=True)
    payload["classes"] = ["gan", "dm", "real"]
    permuted = tmp_path / "permuted.pt"
    torch.save(payload, permuted)
    with pytest.raises(DfxError, match="classes"):
        dfx.load_detector(permuted, device="cpu")
    result = invoke("predict", "--model", permuted, trained["manifest"])
    assert_user_error(result, "classes")


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
