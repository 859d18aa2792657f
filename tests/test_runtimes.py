"""ONNX export and the backends: round trips, metadata, backend choice, errors."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import onnxruntime  # noqa: F401  (the onnx extra: every test here needs it)
import pytest
import torch
from PIL import Image
from torch import nn

import dfx
from dfx.checkpoint import DETECTOR_FORMAT, ModelFile, save_model_file
from dfx.engine import sessions
from dfx.engine.detector import Detector
from dfx.engine.device import Placement
from dfx.engine.export import export_detector
from dfx.engine.onnx_file import read_metadata, read_onnx_detector
from dfx.errors import DfxError
from dfx.fingerprint import file_sha256
from dfx.models import inference_settings
from dfx.models.backbones import get_spec
from dfx.models.detector import build_detector_network
from dfx.models.inference_settings import choose_backend, settings_for
from dfx.threshold import Threshold
from tests.helpers import SKIP_WITHOUT_OPENVINO, assert_user_error, invoke

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
needs_openvino = pytest.mark.skipif(not HAS_OPENVINO, reason=SKIP_WITHOUT_OPENVINO)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Graphs exported on the fly go to a test folder, never to the user's cache."""
    monkeypatch.setenv("DFX_CACHE_DIR", str(tmp_path / "cache"))


def write_detector(path, backbone: str, architecture: str = "deepfeaturex", seed: int = 0):
    """A detector file with random weights at 32 px and a calibrated threshold of 0.42."""
    torch.manual_seed(seed)
    network = build_detector_network(architecture, backbone, 32).eval()
    model_file = ModelFile(
        format=DETECTOR_FORMAT,
        backbone=backbone,
        classes=["dm", "gan", "real"],
        preprocessing=get_spec(backbone).preprocessing(32),
        state_dict=network.state_dict(),
        config={},
        metrics={"threshold": {"value": 0.42, "rule": "test"}},
        architecture=architecture,
    )
    return save_model_file(model_file, path), network


@pytest.fixture(scope="module")
def trained(tmp_path_factory, manifest_path):
    """A tiny detector file (random weights: the runtimes must agree on any weights)."""
    path, _ = write_detector(tmp_path_factory.mktemp("pt") / "model.pt", "tiny")
    return {"model": path, "manifest": manifest_path}


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """The tiny detector exported with ``dfx export --json``."""
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    result = invoke("export", "--model", trained["model"], "--out", out, "--json")
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def test_export_records_the_detector_in_the_onnx_metadata(trained, exported):
    out, report = exported
    assert report["path"] == str(out) and report["backbone"] == "tiny"
    assert report["max_abs_dp"] <= 1e-5
    metadata = read_metadata(out)
    source = dfx.load_detector(trained["model"], device="cpu")
    assert metadata["dfx.source_sha256"] == file_sha256(trained["model"]) == report["source_sha256"]
    assert metadata["dfx.version"] == dfx.__version__
    assert json.loads(metadata["dfx.classes"]) == ["dm", "gan", "real"]
    assert float(metadata["dfx.parity_max_abs_dp"]) == report["max_abs_dp"]
    described = read_onnx_detector(out)
    assert described.preprocessing == source.preprocessing
    assert (described.backbone, described.architecture) == ("tiny", "deepfeaturex")
    assert described.threshold == source.threshold == 0.42


def test_the_onnx_file_predicts_like_the_pt_file(trained, exported, data_dir):
    images = sorted(data_dir.rglob("*.png"))[:37]
    torch_run = dfx.load_detector(trained["model"], device="cpu").predict(images, batch_size=8)
    onnx_detector = dfx.load_detector(exported[0], device="cpu")
    assert onnx_detector.backend == "onnxruntime"
    onnx_run = onnx_detector.predict(images, batch_size=8)
    for expected, got in zip(torch_run, onnx_run, strict=True):
        assert got.path == expected.path
        assert got.label == expected.label and got.fake == expected.fake
        assert abs(got.p_fake - expected.p_fake) <= 1e-5
        assert max(abs(got.probs[c] - expected.probs[c]) for c in got.probs) <= 1e-5


def test_evaluate_and_robustness_run_an_onnx_file(trained, exported):
    manifest = trained["manifest"]
    reports = {}
    for model in (trained["model"], exported[0]):
        result = invoke("evaluate", "--model", model, "-m", manifest, "--device", "cpu", "--json")
        assert result.exit_code == 0, result.output
        reports[model.suffix] = json.loads(result.stdout)
    assert reports[".onnx"]["n"] == reports[".pt"]["n"]
    assert reports[".onnx"]["multiclass"]["accuracy"] == reports[".pt"]["multiclass"]["accuracy"]
    result = invoke(
        "jpeg-robustness", "--model", exported[0], "-m", manifest, "--qf", "50", "--json"
    )
    assert result.exit_code == 0, result.output
    assert [row["perturbation"] for row in json.loads(result.stdout)["rows"]] == ["raw", "jpeg:50"]


def test_a_pt_file_runs_under_onnxruntime_through_the_cache(trained, data_dir, tmp_path):
    images = sorted(data_dir.rglob("*.png"))[:5]
    expected = dfx.load_detector(trained["model"], device="cpu").run(images).values
    for _ in range(2):
        detector = dfx.load_detector(trained["model"], device="cpu", runtime="onnxruntime")
        assert detector.backend == "onnxruntime"
        assert torch.allclose(detector.run(images).values, expected, atol=1e-5, rtol=0)
    assert len(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == 1  # exported once


@pytest.mark.parametrize("backbone", ["resnet18", "vit_b_32"])
def test_a_paper_backbone_exports_and_matches_torch(backbone, tmp_path):
    """A baseline at 32 px with random weights: a torchvision graph survives the export
    (the fusion around it is the tiny detector's; three backbones only cost time). ViT's
    attention exports through its unfused path."""
    pt, network = write_detector(tmp_path / "model.pt", backbone, "baseline")
    result = export_detector(pt, tmp_path / "model.onnx")
    assert result.max_abs_dp <= 1e-5
    images = torch.randn(5, 3, 32, 32)
    session = dfx.load_detector(tmp_path / "model.onnx", device="cpu")
    with torch.inference_mode():
        assert torch.allclose(session.network(images), network(images), atol=1e-4, rtol=0)


def test_auto_picks_torch_for_pt_files_and_a_session_runtime_for_onnx(monkeypatch):
    assert choose_backend("auto", is_onnx=False) == "torch"
    assert choose_backend("auto", is_onnx=True) == "onnxruntime"
    assert choose_backend("OpenVINO", is_onnx=False) == "openvino"
    monkeypatch.setattr(inference_settings, "is_installed", lambda name: name == "openvino")
    assert choose_backend("auto", is_onnx=True) == "openvino"
    monkeypatch.setattr(inference_settings, "is_installed", lambda name: True)
    assert choose_backend("auto", is_onnx=True, precision="bf16") == "openvino"
    with pytest.raises(DfxError, match="not one of auto, torch, onnxruntime, openvino"):
        choose_backend("tensorflow", is_onnx=False)


@pytest.fixture
def without(monkeypatch):
    """Make the named packages fail to import, as if their extra were not installed."""

    def hide(*names: str) -> None:
        for name in names:
            monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError

    return hide


def test_a_missing_runtime_names_its_extra(trained, without, exported, data_dir):
    without("onnxruntime", "openvino")
    image = next(data_dir.rglob("*.png"))  # a real input: no input at all is refused first
    result = invoke("predict", "--model", trained["model"], "--runtime", "openvino", image)
    assert_user_error(result, 'pip install "deepfeaturex[openvino]"')
    result = invoke("predict", "--model", exported[0], image)
    assert_user_error(result, "ONNX Runtime", 'pip install "deepfeaturex[onnx]"')


def test_export_without_the_onnx_extra_names_it(trained, without, tmp_path):
    without("onnx")
    result = invoke("export", "--model", trained["model"], "--out", tmp_path / "m.onnx")
    assert_user_error(result, 'pip install "deepfeaturex[onnx]"')
    assert not (tmp_path / "m.onnx").exists()


def test_corrupt_and_foreign_onnx_files_are_one_sentence(tmp_path, data_dir):
    import onnx
    from onnx import helper

    image = next(data_dir.rglob("*.png"))
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07 this is not a protobuf \xff\xff")
    result = invoke("predict", "--model", corrupt, image)
    assert_user_error(result, "is not a readable ONNX file")
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "foreign",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    foreign = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph), foreign)
    result = invoke("evaluate", "--model", foreign, "--data", data_dir)
    assert_user_error(result, "not a dfx detector", "dfx export")


def test_runtime_options_that_cannot_work_are_refused(trained, exported):
    image = str(next(trained["manifest"].parent.rglob("*.png")))
    cases = [
        (["--model", exported[0], "--runtime", "torch"], "is an ONNX graph"),
        (["--model", trained["model"], "--runtime", "onnxruntime", "--precision", "bf16"],
         "runs fp32 only"),
        (["--model", exported[0], "--compile"], "--compile applies to the torch runtime only"),
        (["--model", trained["model"], "--runtime", "jax"], "is not one of"),
    ]  # fmt: skip
    for options, fragment in cases:
        assert_user_error(invoke("predict", *options, image), fragment)
    result = invoke("export", "--model", exported[0], "--out", exported[0].with_name("x.onnx"))
    assert_user_error(result, "already an ONNX graph")
    result = invoke("export", "--model", trained["model"], "--out", "m.tflite", "--format", "tf")
    assert_user_error(result, "--format 'tf' is not one of onnx")


@needs_openvino
def test_openvino_runs_the_onnx_file_like_torch(trained, exported, data_dir):
    images = sorted(data_dir.rglob("*.png"))[:12]
    expected = dfx.load_detector(trained["model"], device="cpu").run(images, batch_size=4)
    detector = dfx.load_detector(exported[0], device="cpu", runtime="openvino")
    assert detector.backend == "openvino"
    got = detector.run(images, batch_size=4)
    assert torch.allclose(got.values, expected.values, atol=1e-5, rtol=0)
    if sessions.cpu_has_native_bf16():
        bf16 = dfx.load_detector(exported[0], "cpu", "bf16", runtime="openvino")
        assert bf16.network.precision == "bf16"
        assert torch.allclose(bf16.run(images, batch_size=4).values, expected.values, atol=0.05)


def _random_images(count: int) -> list[Image.Image]:
    return [
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (40, 48, 3), np.uint8))
        for i in range(count)
    ]


@pytest.mark.parametrize(
    ("backbone", "batch_size", "channels_last"),
    [("densenet121", 4, True), ("efficientnet_b0", 4, True), ("resnet18", 4, False),
     ("vit_b_32", 8, False), ("tiny", 32, False)],
)  # fmt: skip
def test_cpu_defaults_come_from_the_backbone_family(backbone, batch_size, channels_last, tmp_path):
    """Each family runs with its measured batch and layout on the CPU (docs/performance.md)."""
    settings = settings_for(backbone)
    assert (settings.cpu_batch_size, settings.cpu_channels_last) == (batch_size, channels_last)
    path, _ = write_detector(tmp_path / "m.pt", backbone)
    detector = dfx.load_detector(path, device="cpu", runtime="torch")
    assert detector.batch_size() == batch_size and detector.batch_size(3) == 3
    assert detector.placement.channels_last is channels_last
    convolution = next(m for m in detector.network.modules() if isinstance(m, nn.Conv2d))
    assert convolution.weight.is_contiguous(memory_format=torch.channels_last) is channels_last
    # The layout changes the kernels, not the answer: contiguous fp32 within rounding.
    images = _random_images(5)
    contiguous = Detector(detector.model_file, Placement(torch.device("cpu"), None))
    assert torch.allclose(
        detector.run(images).values, contiguous.run(images, batch_size=5).values, atol=1e-5
    )


def test_a_run_resolves_its_threshold_and_batch_size_once_and_hands_them_back(trained):
    detector = dfx.load_detector(trained["model"], device="cpu", runtime="torch")
    images = _random_images(3)
    batches = detector.iter_predict(images)
    assert (batches.threshold, batches.batch_size) == (Threshold(0.42, "model"), 32)
    predictions = [p for batch in batches for p in batch]
    assert [p.fake for p in predictions] == [p.p_fake >= 0.42 for p in predictions]
    given = detector.iter_predict(images, threshold=0.9, batch_size=2)
    assert (given.threshold, given.batch_size) == (Threshold(0.9, "option"), 2)
    assert detector.resolve_threshold(given.threshold) is given.threshold
    # A verdict decided at another threshold: the same decision, P(fake) >= t.
    moved = predictions[0].at_threshold(predictions[0].p_fake)
    assert moved.fake is True and predictions[0].at_threshold(1.0).fake is False


def test_auto_runs_a_measured_family_through_onnxruntime_on_the_cpu(tmp_path, monkeypatch):
    """densenet's inference settings measured ONNX Runtime faster: auto takes it, exact to 1e-5."""
    path, _ = write_detector(tmp_path / "m.pt", "densenet121")
    images = _random_images(3)
    automatic = dfx.load_detector(path, device="cpu")
    assert automatic.backend == "onnxruntime"  # the module skips without it
    reference = dfx.load_detector(path, device="cpu", runtime="torch")
    assert torch.allclose(automatic.run(images).values, reference.run(images).values, atol=1e-5)
    # Exact runs only, torch where the user asked for its features.
    for options in ({"precision": "bf16"}, {"runtime": "torch"}):
        assert dfx.load_detector(path, device="cpu", **options).backend == "torch"
    assert choose_backend("auto", False, "auto", "tiny", "cpu") == "torch"
    assert choose_backend("auto", False, "auto", "densenet121", "cpu", compile=True) == "torch"
    # A cache it cannot write to: auto falls back to torch instead of failing.
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("DFX_CACHE_DIR", str(blocker))
    assert dfx.load_detector(path, device="cpu").backend == "torch"
    with pytest.raises(DfxError, match="cannot write the exported graph"):
        dfx.load_detector(path, device="cpu", runtime="onnxruntime")
    # Explanations of a session-run .pt come from its torch weights, as torch gives them.
    explained = automatic.explain(images[:1])[0]
    assert explained.error is None and set(explained.heatmaps) == {"dm", "gan", "real"}
    assert explained.shares == pytest.approx(reference.explain(images[:1])[0].shares, abs=1e-4)


def test_an_onnx_detector_cannot_explain_and_says_why(exported):
    import captum  # noqa: F401  (the explain extra, which the test extra brings)

    detector = dfx.load_detector(exported[0], device="cpu")
    image = Image.fromarray(np.zeros((40, 48, 3), np.uint8))
    with pytest.raises(DfxError, match="explanations need gradients.*explain the .pt file"):
        detector.explain([image])
