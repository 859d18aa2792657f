"""Importing the official DeepFeatureX release's files: same probabilities, clear refusals."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from dfx.checkpoint import BASE_FORMAT, DETECTOR_FORMAT, load_model_file
from dfx.classes import CLASSES
from dfx.engine.fusion_training import assemble_extractors, load_base_models
from dfx.errors import DfxError
from dfx.fingerprint import file_sha256
from dfx.interop.official import import_official
from dfx.models.backbones import get_spec
from tests.helpers import assert_user_error, invoke

BACKBONE = "resnet18"
SIZE = 64


def official_base_model(seed: int) -> nn.Module:
    """A base model as the release trains it: the torchvision net with a 2-way ``fc``."""
    torch.manual_seed(seed)
    network = torchvision.models.resnet18(num_classes=2)
    _randomise_batchnorm(network)
    return network.eval()


class OfficialStyleDetector(nn.Module):
    """The release's complete model, written from its description: the key layout under test.

    Three backbones without their final layer (``model1`` dm, ``model2`` gan, ``model3``
    real), features stacked as channels, ``convs`` (conv/ReLU/BatchNorm ×4, conv/ReLU,
    global average pooling at index 14) and ``classifier`` holding the 1024→3 layer.
    """

    def __init__(self, bases: list[nn.Module]) -> None:
        super().__init__()
        for base in bases:
            remove_final_layer(base)
        self.model1, self.model2, self.model3 = bases
        widths = [3, 16, 64, 256, 512, 1024]
        kernels, strides = [7, 5, 3, 3, 3], [2, 2, 1, 1, 1]
        layers: list[nn.Module] = []
        for i, (kernel, stride) in enumerate(zip(kernels, strides)):
            layers += [nn.Conv1d(widths[i], widths[i + 1], kernel, stride, 1), nn.ReLU()]
            layers.append(nn.BatchNorm1d(widths[i + 1]) if i < 4 else nn.AdaptiveAvgPool1d(1))
        self.convs = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Linear(1024, 3))
        _randomise_batchnorm(self.convs)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        stacked = torch.stack([m(images) for m in (self.model1, self.model2, self.model3)], 1)
        logits = self.classifier(self.convs(stacked).flatten(1))
        return torch.softmax(logits, dim=1)


def remove_final_layer(network: nn.Module) -> None:
    """Replace the final linear layer by the identity, per torchvision family."""
    if hasattr(network, "fc"):
        network.fc = nn.Identity()
    elif hasattr(network, "heads"):
        network.heads.head = nn.Identity()
    else:
        network.classifier = nn.Identity()


def _randomise_batchnorm(module: nn.Module) -> None:
    # Non-trivial running statistics, so that a BatchNorm mapped to the wrong place shows.
    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.running_mean.uniform_(-0.5, 0.5)
            layer.running_var.uniform_(0.5, 2.0)
            layer.weight.data.uniform_(0.5, 1.5)
            layer.bias.data.uniform_(-0.2, 0.2)


@pytest.fixture(scope="module")
def official(tmp_path_factory) -> dict:
    """Official-style files: three base models (plain, wrapped, DataParallel) and a complete one."""
    folder = tmp_path_factory.mktemp("official")
    bases = [official_base_model(seed) for seed in range(3)]
    paths = {name: folder / f"{name}-res18.pt" for name in CLASSES}
    torch.save(bases[0].state_dict(), paths["dm"])
    torch.save({"state_dict": bases[1].state_dict(), "epoch": 7}, paths["gan"])
    torch.save({f"module.{k}": v for k, v in bases[2].state_dict().items()}, paths["real"])
    base_outputs = {name: base for name, base in zip(CLASSES, bases)}
    torch.manual_seed(3)
    complete = OfficialStyleDetector([official_base_model(seed) for seed in (10, 11, 12)]).eval()
    paths["complete"] = folder / "complete-res18.pt"
    torch.save(complete.state_dict(), paths["complete"])
    torch.manual_seed(4)
    images = torch.randn(4, 3, SIZE, SIZE)
    return {"paths": paths, "complete": complete, "bases": base_outputs, "images": images}


def detector_probabilities(path, images: torch.Tensor) -> torch.Tensor:
    import dfx

    detector = dfx.load_detector(path, device="cpu", precision="fp32")
    with torch.inference_mode():
        return torch.softmax(detector.network(images), dim=1)


def test_complete_file_gives_the_official_probabilities(official, tmp_path):
    out = tmp_path / "model.pt"
    result = invoke(
        "import-official", "-b", BACKBONE, "--complete", official["paths"]["complete"],
        "--out", out, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["format"] == DETECTOR_FORMAT and summary["written"] == [str(out)]
    assert summary["sources"][0]["sha256"] == file_sha256(official["paths"]["complete"])
    with torch.inference_mode():
        expected = official["complete"](official["images"])
    actual = detector_probabilities(out, official["images"])
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(expected, torch.full_like(expected, 1 / 3), atol=1e-3)
    model_file = load_model_file(out, DETECTOR_FORMAT)
    assert model_file.preprocessing == get_spec(BACKBONE).preprocessing()
    assert model_file.config["imported"]["files"]["complete"]["sha256"] == file_sha256(
        official["paths"]["complete"]
    )


def test_base_files_replace_the_extractors_of_the_complete_model(official, tmp_path):
    paths = official["paths"]
    out = tmp_path / "mixed.pt"
    import_official(BACKBONE, out, complete=paths["complete"], gan=paths["gan"], image_size=SIZE)
    reference = official["complete"]
    gan = official_base_model(1)
    gan.fc = nn.Identity()
    swapped = OfficialStyleDetector([reference.model1, gan, reference.model3])
    swapped.convs.load_state_dict(reference.convs.state_dict())
    swapped.classifier.load_state_dict(reference.classifier.state_dict())
    with torch.inference_mode():
        expected = swapped.eval()(official["images"])
        before = reference(official["images"])
    actual = detector_probabilities(out, official["images"])
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(expected, before, atol=1e-4)
    assert load_model_file(out, DETECTOR_FORMAT).preprocessing.input_size == SIZE


def test_base_files_alone_become_dfx_base_models(official, tmp_path):
    paths = official["paths"]
    result = invoke(
        "import-official", "-b", BACKBONE, "--dm", paths["dm"], "--gan", paths["gan"],
        "--real", paths["real"], "--out", tmp_path / "base", "--image-size", SIZE,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "wrote base model" in result.stderr  # a notice; results alone go to stdout
    files = load_base_models({name: tmp_path / "base" / f"{name}.pt" for name in CLASSES})
    assert {f.format for f in files.values()} == {BASE_FORMAT}
    assert files["gan"].classes == ["others", "gan"]
    extractors = assemble_extractors(files)
    for name in CLASSES:
        reference = official["bases"][name]
        with torch.inference_mode():
            expected_logits = reference(official["images"])
            features = extractors[name].eval()(official["images"])
            logits = nn.functional.linear(features, reference.fc.weight, reference.fc.bias)
        torch.testing.assert_close(logits, expected_logits, rtol=1e-5, atol=1e-5)


def test_bad_official_files_are_refused_with_their_keys(official, tmp_path):
    state = torch.load(official["paths"]["complete"], weights_only=True)

    def run(name: str, payload, *options: str):
        path = tmp_path / name
        torch.save(payload, path)
        return invoke(
            "import-official", "-b", BACKBONE, "--complete", path, "--out", tmp_path / "m.pt",
            *options,
        )  # fmt: skip

    extra = state | {"model1.extra.weight": torch.zeros(1), "head.bias": torch.zeros(1)}
    assert_user_error(run("extra.pt", extra), "2 unexpected key(s)", "model1.extra.weight")
    short = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    assert_user_error(run("short.pt", short), "2 missing key(s)", "classifier.0.weight")
    resized = state | {"convs.0.weight": torch.zeros(16, 3, 5)}
    assert_user_error(
        run("resized.pt", resized), "convs.0.weight is [16, 3, 5] in the file but [16, 3, 7] here"
    )
    assert_user_error(
        run("other-backbone.pt", state, "-b", "resnet34"), "missing key(s)", "model1.layer1.2"
    )
    assert_user_error(run("list.pt", [torch.zeros(2)]), "does not hold a state dict")
    assert_user_error(run("module.pt", nn.Linear(2, 2)), "loads safely (weights only")
    assert_user_error(
        run("nvidia.pt", {"model1.stem.conv.weight": torch.zeros(1)}, "-b", "efficientnet_b0"),
        "NVIDIA",
    )
    base = torch.load(official["paths"]["dm"], weights_only=True)
    assert_user_error(run("base.pt", base), "a base-model file goes to --dm")
    assert not (tmp_path / "m.pt").exists()


def test_import_official_usage_errors(official, tmp_path):
    paths = official["paths"]
    assert_user_error(
        invoke("import-official", "-b", BACKBONE, "--dm", paths["dm"], "--out", tmp_path / "b"),
        "give --complete (with optional --dm, --gan or --real",
    )
    assert_user_error(
        invoke("import-official", "-b", "nope", "--complete", paths["complete"], "--out", "m.pt"),
        "unknown backbone 'nope'",
    )
    assert_user_error(
        invoke("import-official", "-b", BACKBONE, "--complete", tmp_path / "absent.pt",
               "--out", tmp_path / "m.pt"),
        "does not exist",
    )  # fmt: skip
    assert_user_error(
        invoke("import-official", "-b", BACKBONE, "--complete", paths["complete"],
               "--dm", paths["complete"], "--out", tmp_path / "m.pt"),
        "a complete-model file goes to --complete",
    )  # fmt: skip
    with pytest.raises(DfxError, match="is a folder"):
        import_official(BACKBONE, tmp_path, complete=paths["complete"])


@pytest.mark.parametrize("backbone", ["densenet121", "vit_b_16", "resnet50"])
def test_layouts_of_other_torchvision_families_fit(backbone):
    from dfx.interop.official import base_to_network_state, complete_to_detector_state

    name = get_spec(backbone).torchvision_name
    with torch.device("meta"):  # shapes only: no memory, no arithmetic
        bases = [torchvision.models.get_model(name, num_classes=2) for _ in CLASSES]
        base_state = bases[0].state_dict()
        complete = OfficialStyleDetector(bases).state_dict()
    assert len(base_to_network_state(base_state, backbone)) == len(base_state)
    detector_state = complete_to_detector_state(complete, backbone)
    assert len(detector_state) == len(complete)
    assert sum(k.startswith("extractors.real.") for k in detector_state) == len(base_state) - 2


def test_imported_detector_runs_in_predict_and_tolerates_old_checkpoints(official, tmp_path):
    state = torch.load(official["paths"]["complete"], weights_only=True)
    # An fp16 save from a PyTorch without BatchNorm step counters.
    old = {k: v.half() for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(old, tmp_path / "old.pt")
    out = tmp_path / "old-model.pt"
    import_official(BACKBONE, out, complete=tmp_path / "old.pt", image_size=32)
    model_file = load_model_file(out, DETECTOR_FORMAT)
    assert model_file.state_dict["head.convs.0.weight"].dtype == torch.float32
    assert "extractors.dm.bn1.num_batches_tracked" in model_file.state_dict
    image = tmp_path / "a.png"
    Image.new("RGB", (40, 30), (120, 30, 200)).save(image)
    result = invoke("predict", "--model", out, "--device", "cpu", image, "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["label"] in CLASSES and abs(sum(record["probs"].values()) - 1) < 1e-5
