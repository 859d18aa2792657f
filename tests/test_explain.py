"""dfx explain: heatmaps per specialist, contribution shares, the sanity check, the command."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import spearmanr

from dfx import synthetic
from dfx.api import Detector, load_detector
from dfx.checkpoint import DETECTOR_FORMAT, ModelFile
from dfx.classes import CLASSES
from dfx.data.decoding import displayed_size
from dfx.data.labelled import images_from_manifest
from dfx.data.manifest import read_manifest
from dfx.engine.configs import BaseTrainConfig
from dfx.engine.device import resolve_placement
from dfx.engine.explain import BASELINE_KEY, METHODS, class_activation_map, normalised_shares
from dfx.models.backbones import REGISTRY, get_spec
from dfx.models.detector import build_detector_network
from tests.helpers import assert_user_error, invoke


@pytest.fixture(scope="module")
def detector(trained) -> Detector:
    return load_detector(trained["model"], "cpu")


@pytest.fixture(scope="module")
def test_images(trained) -> list[Path]:
    images = images_from_manifest(read_manifest(trained["manifest"]), "test")
    return [image.path for image in images[::12]]  # 20 of the 240, every class


def test_maps_and_shares_of_each_specialist(detector, test_images):
    explanations = detector.explain(test_images[:8])
    assert [e.path for e in explanations] == [str(p) for p in test_images[:8]]
    for explanation in explanations:
        assert explanation.error is None
        assert explanation.target == explanation.prediction.label  # default: the predicted class
        assert set(explanation.heatmaps) == set(CLASSES)
        for heatmap in explanation.heatmaps.values():
            assert heatmap.shape == (32, 32) and heatmap.dtype == np.float32
            assert heatmap.min() >= 0.0 and heatmap.max() <= 1.0
        shares = np.array([explanation.shares[c] for c in CLASSES])
        assert (shares >= 0).all() and shares.sum() == pytest.approx(1.0, abs=1e-6)
        record = json.loads(json.dumps(explanation.to_dict()))
        assert record["shares"] == explanation.shares and record["size"] == [32, 32]
    # The maps are not all blank: the specialists find evidence somewhere.
    assert sum(m.max() > 0 for e in explanations for m in e.heatmaps.values()) >= 8


def test_target_class_changes_what_is_explained(detector, test_images):
    as_gan = detector.explain(test_images[:4], target="gan")
    as_real = detector.explain(test_images[:4], target="real")
    assert {e.target for e in as_gan} == {"gan"}
    differ = [
        not np.allclose(g.heatmaps[k], r.heatmaps[k]) or g.shares != r.shares
        for g, r in zip(as_gan, as_real)
        for k in CLASSES
    ]
    assert any(differ)


def test_normalised_shares_drop_negative_contributions():
    shares = normalised_shares(np.array([[2.0, -1.0, 2.0], [-1.0, -2.0, 0.0]]))
    assert shares[0].tolist() == [0.5, 0.0, 0.5]
    assert shares[1].tolist() == pytest.approx([1 / 3] * 3)  # nothing drove the score


def test_class_activation_maps_follow_their_definitions():
    from captum.attr import LayerGradCam, LayerGradientXActivation

    torch.manual_seed(0)
    network = torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(6, 3),
    )
    images, layer, target = torch.randn(2, 3, 5, 7), network[1], torch.tensor([0, 2])
    gradients = LayerGradientXActivation(network, layer, multiply_by_inputs=False).attribute(
        images, target=target
    )
    activations = layer(network[0](images)).detach()
    references = {  # captum's own Grad-CAM and gradient × activation, and the papers' formulas
        "gradcam": LayerGradCam(network, layer).attribute(images, target=target)[:, 0],
        "hirescam": (gradients * activations).sum(1),
        "layercam": (gradients.clamp(min=0) * activations).sum(1),
    }
    plain = references["gradcam"]
    references["gradcam-relative"] = plain - plain.mean((1, 2), keepdim=True)
    for method, reference in references.items():
        computed = class_activation_map(method, gradients, activations)
        torch.testing.assert_close(computed, reference.clamp(min=0), msg=method)
    assert set(references | {"gradcam++": None}) == set(METHODS)
    # Grad-CAM++ by hand: one channel, cells A = (1, 3), gradients g = (1, 1): each cell's
    # alpha = g² / (2g² + ΣA·g³) = 1/6, the channel's weight Σ alpha·relu(g) = 1/3.
    cells, ones = torch.tensor([[[[1.0, 3.0]]]]), torch.ones(1, 1, 1, 2)
    torch.testing.assert_close(class_activation_map("gradcam++", ones, cells), cells[0] / 3)
    assert class_activation_map("gradcam++", -ones, cells).max() == 0  # no positive gradient
    # With g = 2 the orders differ: alpha = 4 / (8 + 4·8) = 0.1, the weight 2 × 0.1 × 2 = 0.4.
    torch.testing.assert_close(class_activation_map("gradcam++", 2 * ones, cells), cells[0] * 0.4)
    # The relative map is drawn where Grad-CAM's is blank: the evidence as a whole is negative.
    negative = class_activation_map("gradcam", -gradients.abs(), activations)
    assert (
        negative.max() == 0
        and class_activation_map("gradcam-relative", -gradients.abs(), activations).max() > 0
    )


def _reinitialise(network: torch.nn.Module, seed: int) -> None:
    torch.manual_seed(seed)
    for module in network.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()


@pytest.mark.parametrize("method", ["gradcam", "gradcam-relative"])
def test_sanity_check_maps_change_when_base_models_are_randomised(trained, test_images, method):
    """Adebayo et al. (2018): a map that survives randomising the weights explains nothing."""
    trained_detector = load_detector(trained["model"], "cpu")
    random_detector = load_detector(trained["model"], "cpu")
    _reinitialise(random_detector.network.extractors, seed=1)
    before = trained_detector.explain(test_images, method=method)
    correlations = []
    for target in CLASSES:  # the randomised model explains the same class as the trained one
        chosen = [i for i, e in enumerate(before) if e.target == target]
        chosen_images = [test_images[i] for i in chosen]
        after = random_detector.explain(chosen_images, target=target, method=method)
        for i, explanation in zip(chosen, after):
            for key in CLASSES:
                a, b = before[i].heatmaps[key].ravel(), explanation.heatmaps[key].ravel()
                if a.std() > 0 and b.std() > 0:  # a blank map has no ranks to compare
                    correlations.append(spearmanr(a, b).statistic)
    correlations = np.array(correlations)
    # Enough pairs for "most" to mean something. Grad-CAM leaves maps blank where a
    # specialist's evidence is negative as a whole, and how many depends on the CPU that
    # trained the model: of the 60 pairs, 27 were comparable on an Intel Xeon, 19 on an
    # AMD EPYC. The relative map is blank only for perfectly even evidence.
    comparable = {"gradcam": 10, "gradcam-relative": 50}[method]
    assert len(correlations) >= comparable, len(correlations)
    assert np.mean(correlations < 0.5) > 0.5, np.round(correlations, 2)


@pytest.fixture(scope="module")
def composites() -> tuple[list[Image.Image], list[int]]:
    return synthetic.half_composites(20, image_size=32)


def _explain_gan(detector: Detector, composites, **options):
    """The gan explanations of the composites, and each gan map's share on the GAN half."""
    images, gan_sides = composites
    explanations = detector.explain(images, target="gan", **options)
    maps = [e.heatmaps["gan"] for e in explanations]
    return maps, np.array(list(map(synthetic.share_on_gan_half, maps, gan_sides)))


def test_gan_specialist_finds_the_gan_half_of_composites(detector, composites):
    # Relative Grad-CAM. The target (>= 0.65 of the map on the GAN half of >= 80% of
    # the composites, blank maps counting as misses) is asserted on the demo-sized model
    # below, and met there at 92-100% (docs/explain.md). This 32-pixel model has a 4x4 feature
    # map whose middle columns see both halves; models trained with data seeds 0 (the
    # fixture), 1, 2 and seed 0 on 1 thread localise 80%, 60%, 80%, 90% (mean share 0.81,
    # 0.63, 0.74, 0.82; Intel Xeon). Another CPU's rounding moves the model about as much
    # as another seed, so the bounds sit below all four; a map blind to the halves would
    # give shares near 0.5 and localise none.
    maps, shares = _explain_gan(detector, composites, method="gradcam-relative")
    assert all(heatmap.sum() > 0 for heatmap in maps)  # no blank map
    assert np.mean(shares >= 0.65) >= 0.5, np.round(shares, 2)
    assert shares.mean() >= 0.57, np.round(shares, 2)


@pytest.fixture(scope="module")
def demo_sized(tmp_path_factory) -> Detector:
    """A detector trained as `dfx demo` trains one, with its defaults (about 50 s)."""
    import inspect

    from dfx.cli.demo import demo_command
    from tests.conftest import train_detector

    defaults = {k: v.default for k, v in inspect.signature(demo_command).parameters.items()}
    trained = train_detector(
        tmp_path_factory.mktemp("demo_sized"),
        per_generator=defaults["per_generator"],
        image_size=defaults["image_size"],
        base_epochs=defaults["base_epochs"],
        fusion_epochs=defaults["fusion_epochs"],
        base_batch_size=BaseTrainConfig.batch_size,
    )
    return load_detector(trained["model"], "cpu")


def test_the_demo_sized_model_finds_the_gan_half_of_composites(demo_sized):
    """The issue's target: >= 0.65 of the gan map on the GAN half of >= 80% of composites."""
    size = demo_sized.model_file.preprocessing.resize
    composites = synthetic.half_composites(40, image_size=size)
    _, shares = _explain_gan(demo_sized, composites, method="gradcam-relative")
    # Measured on four demo models (seeds 0, 1, 2; seed 0 on 1 thread; Intel Xeon): 92-100%
    # of 100 composites, never a blank map (docs/explain.md).
    assert np.mean(shares >= 0.65) >= 0.8, np.round(shares, 2)


def test_grad_cam_maps_that_are_drawn_point_at_the_gan_half(detector, composites):
    _, shares = _explain_gan(detector, composites)
    # Plain Grad-CAM leaves a map blank where the gan features argue against "gan" as a
    # whole (1-15 of 20 maps on the runs measured, docs/explain.md); where a map is drawn
    # it points at the GAN half: 94%, 94%, 72%, 100% of those maps (AMD EPYC), 65-94% (Xeon).
    drawn = np.array([share for share in shares if share > 0])
    assert len(drawn) >= 4, np.round(shares, 2)
    assert np.mean(drawn >= 0.65) >= 0.6, np.round(shares, 2)


def _rotated_pair(folder: Path) -> tuple[Path, Path]:
    """The same 48×32 picture stored landscape with EXIF orientation 6, and stored upright."""
    synthetic.write_dataset(folder, per_generator=1, image_size=48, seed=3)
    landscape = Image.open(next((folder / "gan").rglob("*.png"))).crop((0, 0, 48, 32))
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90° clockwise: 32 wide, 48 high
    landscape.save(folder / "exif.png", exif=exif.tobytes())
    landscape.transpose(Image.Transpose.ROTATE_270).save(folder / "upright.png")
    return folder / "exif.png", folder / "upright.png"


def test_maps_follow_the_displayed_size_and_orientation(detector, tmp_path):
    exif_file, upright = _rotated_pair(tmp_path)
    assert displayed_size(exif_file) == (32, 48)
    rotated, shown = detector.explain([exif_file, upright])
    assert rotated.size == shown.size == (32, 48)
    for key in CLASSES:
        assert rotated.heatmaps[key].shape == (48, 32)
        np.testing.assert_allclose(rotated.heatmaps[key], shown.heatmaps[key], atol=1e-5)
    wide = Image.fromarray(np.asarray(Image.open(upright)).transpose(1, 0, 2))  # 48×32
    (explanation,) = detector.explain([wide])
    assert all(m.shape == (32, 48) for m in explanation.heatmaps.values())


def _random_baseline(name: str, size: int) -> Detector:
    torch.manual_seed(0)
    network = build_detector_network("baseline", name, size)
    model_file = ModelFile(
        DETECTOR_FORMAT,
        name,
        list(CLASSES),
        get_spec(name).preprocessing(size),
        network.state_dict(),
        {},
        {},
        architecture="baseline",
    )
    return Detector(model_file, resolve_placement("cpu"))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", ["tiny", "vit_b_16"])
def test_every_method_gives_a_map_on_a_cnn_and_a_vit(name, method):
    detector = _random_baseline(name, 32)
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 24, 3), np.uint8))
    (explanation,) = detector.explain([image], method=method)
    heatmap = explanation.heatmaps[BASELINE_KEY]
    assert explanation.method == method and heatmap.shape == (40, 24)  # rows, columns
    assert np.isfinite(heatmap).all() and heatmap.min() >= 0.0 and heatmap.max() <= 1.0


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_backbone_gives_a_map_of_the_displayed_size(name):
    spec = get_spec(name)
    # Two or more cells per side on the feature map: 64 pixels at stride 32, 32 for ViT-B/16.
    detector = _random_baseline(name, 32 if name == "vit_b_16" else 64)
    keys = list(detector.network.state_dict())
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 50, 3), np.uint8))
    (explanation,) = detector.explain([image], method="hirescam" if spec.vit else "gradcam")
    heatmap = explanation.heatmaps[BASELINE_KEY]
    assert list(explanation.heatmaps) == [BASELINE_KEY] and explanation.shares is None
    assert heatmap.shape == (30, 50) and np.isfinite(heatmap).all()
    assert heatmap.min() >= 0.0 and heatmap.max() <= 1.0
    assert list(detector.network.state_dict()) == keys  # a ViT's token view is taken away again


def test_explain_command_json_lines_files_and_exit_codes(trained, test_images, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_text("not a picture")
    out = tmp_path / "explained"
    args = ["explain", "--model", trained["model"], "--out", out, "--device", "cpu", "--json"]
    result = invoke(*args, *test_images[:2], bad)
    assert result.exit_code == 1, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["path"] for r in records] == [str(p) for p in test_images[:2]] + [str(bad)]
    assert records[2] == {"path": str(bad), "error": records[2]["error"]}
    assert "not an image" in records[2]["error"]
    for record in records[:2]:
        assert set(record) >= {"label", "probs", "p_fake", "fake", "shares", "target", "files"}
        assert sum(record["shares"].values()) == pytest.approx(1.0)
        names = [Path(f).name for f in record["files"]]
        stem = Path(record["path"]).stem
        assert names == [f"{stem}.{k}.png" for k in CLASSES] + [f"{stem}.sheet.png"]
        assert Image.open(record["files"][0]).size == (32, 32)  # overlays: the image's size
        assert Image.open(record["files"][-1]).width > 4 * 256  # image + 3 overlays
    good = invoke(
        "explain",
        "--model",
        trained["model"],
        "--out",
        out,
        test_images[0],
        env={"COLUMNS": "2000"},
    )
    assert good.exit_code == 0, good.output
    assert "share_dm" in good.stdout and "sheet.png" in good.stdout  # tab-separated


def test_explain_command_rejects_bad_options(trained, test_images, tmp_path):
    help_text = " ".join(invoke("explain", "--help", env={"COLUMNS": "200"}).stdout.split())
    assert all(method in help_text for method in METHODS)
    model = trained["model"]
    image = test_images[0]
    assert_user_error(invoke("explain", "--model", model, "--target", "fake", image), "--target")
    assert_user_error(invoke("explain", "--model", model, "--method", "x", image), "--method")
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert_user_error(invoke("explain", "--model", model, "--out", blocker, image), "a folder")


def test_explain_command_names_the_extra_when_captum_is_missing(trained, test_images, monkeypatch):
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    result = invoke("explain", "--model", trained["model"], test_images[0])
    assert_user_error(result, 'pip install "deepfeaturex[explain]"')
