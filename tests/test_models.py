"""Backbone registry, fusion head and the assembled detector."""

from __future__ import annotations

import urllib.error

import pytest
import torch

from dfx.errors import DfxError
from dfx.models import backbones
from dfx.models.backbones import REGISTRY, build_network, get_spec, to_feature_extractor
from dfx.models.detector import DeepFeatureX
from dfx.models.fusion import FusionHead

PAPER_BACKBONES = {
    "densenet121": 1024,
    "densenet161": 2208,
    "densenet169": 1664,
    "densenet201": 1920,
    "efficientnet_b0": 1280,
    "efficientnet_b4": 1792,
    "resnet18": 512,
    "resnet34": 512,
    "resnet50": 2048,
    "resnet101": 2048,
    "resnet152": 2048,
    "resnext101": 2048,
    "vit_b_16": 768,
    "vit_b_32": 768,
}


def test_registry_has_the_papers_fourteen_backbones_and_tiny():
    assert {name: REGISTRY[name].feature_dim for name in PAPER_BACKBONES} == PAPER_BACKBONES
    assert set(REGISTRY) == set(PAPER_BACKBONES) | {"tiny"}


def test_every_backbone_has_inference_settings_and_no_other_name_does():
    from dfx.models.inference_settings import SETTINGS, settings_for

    assert list(SETTINGS) == list(REGISTRY)
    assert settings_for("resnext101").cpu_batch_size == 4
    with pytest.raises(DfxError, match="unknown backbone 'resnet9'"):
        settings_for("resnet9")


@pytest.mark.parametrize("name", list(REGISTRY))
def test_base_model_and_extractor_shapes(name):
    spec = get_spec(name)
    size = 32 if spec.vit else 64
    # The meta device checks every layer's shapes without the arithmetic (seconds, not minutes).
    with torch.device("meta"):
        network = build_network(name, "none", image_size=size).eval()
        images = torch.randn(2, 3, size, size)
        assert network(images).shape == (2, 2)
        features = to_feature_extractor(network, name)(images)
    assert features.shape == (2, spec.feature_dim)


@pytest.mark.parametrize("name", ["tiny", "resnet18"])
def test_base_model_runs_on_real_tensors(name):
    torch.manual_seed(0)
    network = build_network(name, "none").eval()
    with torch.inference_mode():
        logits = network(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()


def test_preprocessing_defaults_follow_the_paper():
    assert get_spec("densenet121").preprocessing().resize == 256
    assert get_spec("densenet121").preprocessing().crop is None
    vit = get_spec("vit_b_16").preprocessing()
    assert (vit.resize, vit.crop, vit.input_size) == (256, 224, 224)
    assert get_spec("resnet50").preprocessing(128).input_size == 128


def test_unknown_backbone_lists_the_valid_names():
    with pytest.raises(DfxError) as raised:
        get_spec("resnet9000")
    message = str(raised.value)
    assert "resnet9000" in message and "densenet121" in message and "tiny" in message


def test_imagenet_weights_offline_name_the_missing_file(monkeypatch, tmp_path):
    import torchvision.models._api as tv_api

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", refuse, raising=False)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    with pytest.raises(DfxError) as raised:
        build_network("resnet18", "imagenet")
    message = str(raised.value)
    assert "resnet18-f37072fd.pth" in message
    assert str(tmp_path / "checkpoints") in message
    assert "\n" not in message


def test_weights_file_initialises_the_backbone(tmp_path):
    torch.manual_seed(1)
    source = build_network("tiny", "none", num_outputs=1000)
    path = tmp_path / "tiny.pth"
    torch.save(source.state_dict(), path)
    loaded = build_network("tiny", str(path))
    assert torch.equal(loaded.features[0].weight, source.features[0].weight)
    assert loaded.fc.out_features == 2


def test_weights_file_that_does_not_fit_is_refused(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(build_network("resnet18", "none").state_dict(), path)
    with pytest.raises(DfxError, match="does not fit backbone tiny"):
        build_network("tiny", str(path))
    with pytest.raises(DfxError, match="no such file"):
        build_network("tiny", str(tmp_path / "absent.pth"))


def test_fusion_head_layers_match_the_official_release():
    head = FusionHead()
    assert sum(p.numel() for p in head.parameters()) == 2_027_331
    convs = [m for m in head.convs if isinstance(m, torch.nn.Conv1d)]
    assert [
        (c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0], c.padding[0]) for c in convs
    ] == [
        (3, 16, 7, 2, 1),
        (16, 64, 5, 2, 1),
        (64, 256, 3, 1, 1),
        (256, 512, 3, 1, 1),
        (512, 1024, 3, 1, 1),
    ]
    kinds = [type(m).__name__ for m in head.convs]
    assert kinds == ["Conv1d", "ReLU", "BatchNorm1d"] * 4 + ["Conv1d", "ReLU"]
    assert head.classifier[0].in_features == 1024 and head.classifier[0].out_features == 3


def test_fusion_head_shapes_for_densenet121_features():
    head = FusionHead().eval()
    x = torch.randn(4, 3, 1024)
    lengths = []
    for module in head.convs:
        x = module(x)
        if isinstance(module, torch.nn.Conv1d):
            lengths.append(tuple(x.shape[1:]))
    assert lengths == [(16, 510), (64, 254), (256, 254), (512, 254), (1024, 254)]
    assert head(torch.randn(4, 3, 1024)).shape == (4, 3)
    assert head(torch.randn(2, 3, 64)).shape == (2, 3)


def test_min_feature_dim_is_the_shortest_input_the_head_takes():
    from dfx.models.fusion import min_feature_dim

    head = FusionHead().eval()
    shortest = min_feature_dim()
    assert head(torch.randn(1, 3, shortest)).shape == (1, 3)
    with pytest.raises(RuntimeError):
        head(torch.randn(1, 3, shortest - 1))


def test_detector_stacks_features_in_class_order():
    torch.manual_seed(0)
    detector = DeepFeatureX("tiny", 32).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        stacked = detector.features(images)
        assert stacked.shape == (2, 3, 64)
        assert torch.allclose(stacked[:, 1], detector.extractors["gan"](images))
        assert detector(images).shape == (2, 3)


def test_module_path_replacement_reaches_nested_layers():
    network = build_network("efficientnet_b0", "none")
    backbones.set_module(network, "classifier.1", torch.nn.Identity())
    assert isinstance(network.classifier[1], torch.nn.Identity)
