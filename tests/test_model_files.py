"""Untrusted model files: pickled code never runs, and every mismatch is one sentence."""

from __future__ import annotations

import pytest
import torch

from dfx.classes import CLASSES
from tests.helpers import assert_user_error, invoke


class Exploit:
    """Unpickling this runs code that creates ``marker`` (what a hostile model file does)."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def write_exploit(path, marker) -> None:
    payload = {"format": "dfx-detector", "format_version": 1, "state_dict": Exploit(marker)}
    torch.save(payload, path)


def predict_with(model, image):
    return invoke("predict", "--model", model, image, "--device", "cpu")


def some_image(trained):
    return next((trained["manifest"].parent / "data" / "real").rglob("*.png"))


def test_pickled_code_is_refused_and_never_runs(trained, tmp_path):
    evil, marker = tmp_path / "evil.pt", tmp_path / "pwned"
    write_exploit(evil, marker)
    result = predict_with(evil, some_image(trained))
    assert_user_error(result, str(evil), "not a dfx model file that loads safely (weights only)")
    assert "pickled Python objects (GLOBAL" in result.stderr
    assert "weights_only" not in result.stderr  # never torch's advice to load it unsafely
    assert not marker.exists()
    for name in CLASSES:  # the same refusal as a base model for train-fusion
        (tmp_path / "base").mkdir(exist_ok=True)
        write_exploit(tmp_path / "base" / f"{name}.pt", marker)
    result = invoke(
        "train-fusion", "-m", trained["manifest"], "--base-dir", tmp_path / "base",
        "--out", tmp_path / "m.pt", "--device", "cpu",
    )  # fmt: skip
    assert_user_error(result, "loads safely")
    assert not marker.exists()
    # The file really is armed: an unsafe load would have run its code.
    torch.load(evil, weights_only=False)
    assert marker.exists()


def test_pickled_code_in_a_resume_state_never_runs(trained, tmp_path):
    out, marker = tmp_path / "out", tmp_path / "pwned"
    out.mkdir()
    write_exploit(out / "model.state.pt", marker)
    result = invoke(
        "train-fusion", "-m", trained["manifest"], "--base-dir", trained["base"]["dm"].path.parent,
        "--out", out / "model.pt", "--device", "cpu", "--workers", "0", "--resume",
    )  # fmt: skip
    assert_user_error(result, "not a dfx training state that loads safely")
    assert not marker.exists()


def altered(trained, tmp_path, change, source=None):
    """A copy of the trained detector (or ``source``) with ``change`` applied to its payload."""
    payload = torch.load(source or trained["model"], weights_only=True)
    change(payload)
    path = tmp_path / "altered.pt"
    torch.save(payload, path)
    return path


def test_format_version_names_the_writer(trained, tmp_path):
    def future(payload):
        payload.update(format_version=99, dfx_version="9.9.9")

    result = predict_with(altered(trained, tmp_path, future), some_image(trained))
    assert_user_error(result, "format version 99 (written by dfx 9.9.9)", "reads version 1")


def test_base_model_where_a_detector_is_needed(trained):
    result = predict_with(trained["base"]["dm"].path, some_image(trained))
    assert_user_error(result, "is a base-model file, but a detector file is needed here")


def test_class_names_must_match(trained, tmp_path):
    def cats(payload):
        payload["classes"] = ["cat", "dog", "bird"]

    result = predict_with(altered(trained, tmp_path, cats), some_image(trained))
    assert_user_error(result, "model classes ['cat', 'dog', 'bird'] differ from")


def test_backbone_must_match_the_weights(trained, tmp_path):
    def other(payload):
        payload["backbone"] = "resnet18"

    result = predict_with(altered(trained, tmp_path, other), some_image(trained))
    assert_user_error(result, "resnet18 weights does not fit its architecture", "missing key(s)")

    def unknown(payload):
        payload["backbone"] = "nosuchnet"

    result = predict_with(altered(trained, tmp_path, unknown), some_image(trained))
    assert_user_error(result, "unknown backbone 'nosuchnet'")


def test_missing_and_unexpected_keys(trained, tmp_path):
    def drop(payload):
        del payload["state_dict"]["head.classifier.0.weight"]

    result = predict_with(altered(trained, tmp_path, drop), some_image(trained))
    assert_user_error(result, "1 missing key(s) (head.classifier.0.weight)")

    def extra(payload):
        payload["state_dict"]["head.extra"] = torch.zeros(2)

    result = predict_with(altered(trained, tmp_path, extra), some_image(trained))
    assert_user_error(result, "1 unexpected key(s) (head.extra)")

    def reshaped(payload):
        payload["state_dict"]["head.classifier.0.bias"] = torch.zeros(7)

    result = predict_with(altered(trained, tmp_path, reshaped), some_image(trained))
    assert_user_error(result, "head.classifier.0.bias is [7] in the file but [3] here")


def test_base_model_mismatches_in_train_fusion(trained, tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    paths = {name: trained["base"][name].path for name in CLASSES}
    for name, path in paths.items():
        (base / f"{name}.pt").write_bytes(path.read_bytes())

    def drop(payload):
        payload["state_dict"].pop(next(iter(payload["state_dict"])))

    (base / "gan.pt").write_bytes(altered(trained, tmp_path, drop, paths["gan"]).read_bytes())
    result = invoke(
        "train-fusion", "-m", trained["manifest"], "--base-dir", base,
        "--out", tmp_path / "m.pt", "--device", "cpu", "--workers", "0",
    )  # fmt: skip
    assert_user_error(result, "the gan base model's tiny weights does not fit", "missing key")
    (base / "gan.pt").write_bytes(paths["dm"].read_bytes())
    result = invoke(
        "train-fusion", "-m", trained["manifest"], "--base-dir", base,
        "--out", tmp_path / "m.pt", "--device", "cpu", "--workers", "0",
    )  # fmt: skip
    assert_user_error(result, "is the base model for 'dm', not 'gan'")


def test_files_that_are_not_dfx_model_files(trained, tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(1)}, plain)
    assert_user_error(predict_with(plain, some_image(trained)), "no dfx format marker")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00garbage" * 10)
    assert_user_error(predict_with(garbage, some_image(trained)), "loads safely")


# --- a detector with its classes permuted ---


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
