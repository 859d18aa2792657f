"""Training on the synthetic set: real outcomes, self-describing files, the weighted loss."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dfx.checkpoint import BASE_FORMAT, DETECTOR_FORMAT, load_model_file
from dfx.classes import CLASSES
from dfx.data.labelled import images_from_manifest
from dfx.data.manifest import read_manifest
from dfx.engine.base_training import select_base_rows
from dfx.engine.evaluation import EvaluationConfig, evaluate
from dfx.engine.losses import class_weights, loss_weight, summed_loss
from dfx.errors import DfxError
from tests.helpers import TINY_RUN, invoke

from .conftest import BASE_EPOCHS, FUSION_EPOCHS


def test_base_models_specialise_and_write_their_files(trained):
    for name, result in trained["base"].items():
        assert result.path.name == f"{name}.pt"
        payload = torch.load(result.path, weights_only=True)
        assert payload["format"] == "dfx-base" and payload["target"] == name
        assert payload["classes"] == ["others", name]
        assert payload["backbone"] == "tiny"
        assert payload["preprocessing"]["resize"] == 32
        assert payload["config"]["epochs"] == BASE_EPOCHS
        history = [json.loads(line) for line in result.history_path.read_text().splitlines()]
        assert [h["epoch"] for h in history] == list(range(1, BASE_EPOCHS + 1))
        assert result.best_epoch == 1 + int(np.argmin([h["val_loss"] for h in history]))
        assert set(result.test_metrics) == {"accuracy", "recall", "precision", "f1"}


# Each base model's AUC for "its class vs the others" on the test split, measured on data
# seeds 0, 1, 2 (docs/testing.md): dm 0.85, 0.83, 0.59; gan 0.99, 1.00, 0.96; real 0.74,
# 0.70, 0.75. The dm model is the one that sometimes fails to specialise.
SPECIALIST_AUC = {"dm": 0.55, "gan": 0.90, "real": 0.62}


def test_base_models_specialise_in_their_class(trained):
    """Trained 90:10 towards its class, each base model must still single its class out."""
    from PIL import Image
    from sklearn.metrics import roc_auc_score

    from dfx.models.backbones import build_network

    manifest = read_manifest(trained["manifest"])
    rows = manifest.select("test")
    labels = np.array([row.label for row in rows])
    files = {name: load_model_file(r.path, BASE_FORMAT) for name, r in trained["base"].items()}
    preprocessing = files["dm"].preprocessing  # the three share backbone and input size
    images = [Image.open(manifest.absolute(row)).convert("RGB") for row in rows]
    batch = torch.stack([preprocessing(image) for image in images])
    for name, model_file in files.items():
        assert model_file.preprocessing == preprocessing
        network = build_network("tiny", "none", 32)
        network.load_state_dict(model_file.state_dict)
        network.eval()
        with torch.no_grad():
            p_class = network(batch).softmax(1)[:, 1].numpy()
        is_class = labels == name
        auc = roc_auc_score(is_class, p_class)
        assert auc >= SPECIALIST_AUC[name], (name, auc)
    # Recall near 1 is what a 90:10 set gives; precision above the class's share of the test
    # split is what specialisation adds. Only the gan model's argmax shows it clearly here
    # (+0.29 to +0.44 over the share); dm and real stay within +0.08 (docs/testing.md).
    gan = trained["base"]["gan"].test_metrics
    share = float(np.mean(labels == "gan"))
    assert gan["precision"] >= share + 0.15 and gan["recall"] >= 0.9, (gan, share)


def test_negatives_are_a_small_stratified_share(manifest_path):
    manifest = read_manifest(manifest_path)
    positives, negatives = select_base_rows(manifest, "gan", 0.1, np.random.default_rng(0))
    assert all(row.label == "gan" and row.role == "base" for row in positives)
    assert {row.label for row in negatives} == {"dm", "real"}
    assert {(row.label, row.generator) for row in negatives} == {
        ("dm", "toydm-a"),
        ("dm", "toydm-b"),
        ("real", "photo"),
        ("real", "texture"),
    }
    share = len(negatives) / (len(positives) + len(negatives))
    assert 0.05 < share < 0.2


def test_fusion_detector_is_far_above_chance(trained):
    import dfx

    detector = dfx.load_detector(trained["model"], device="cpu")
    images = images_from_manifest(read_manifest(trained["manifest"]), "test")
    result = evaluate(detector, images, EvaluationConfig(seed=0))
    assert result.balanced and len(set(result.counts.values())) == 1
    assert result.n == 3 * min(result.counts.values())
    # Measured with the fixture's settings on data seeds 0 (the fixture), 1, 2: accuracy 0.84,
    # 0.82, 0.69 and AUC 0.92, 0.91, 0.82 (docs/testing.md); chance is 1/3 and 0.5. Another
    # CPU's rounding changes a run about as much as another seed does, hence the bounds.
    assert result.multiclass["accuracy"] >= 0.65
    assert result.binary["auc"] >= 0.78
    confusion = np.array(result.multiclass["confusion"])
    assert confusion.sum() == result.n


def test_detector_file_describes_itself(trained):
    payload = torch.load(trained["model"], weights_only=True)
    assert payload["format"] == DETECTOR_FORMAT and payload["format_version"] == 1
    assert payload["classes"] == list(CLASSES)
    assert payload["backbone"] == "tiny"
    assert payload["preprocessing"] == {
        "resize": 32,
        "crop": None,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    }
    assert payload["config"]["fusion"]["epochs"] == FUSION_EPOCHS
    assert set(payload["config"]["base"]) == set(CLASSES)
    validation = payload["metrics"]["validation"]
    assert 0 <= validation["multiclass"]["accuracy"] <= 1
    head_params = sum(
        v.numel()
        for k, v in payload["state_dict"].items()
        if k.startswith("head.") and "running" not in k and "num_batches" not in k
    )
    assert head_params == 2_027_331
    assert {k.split(".")[1] for k in payload["state_dict"] if k.startswith("extractors.")} == set(
        CLASSES
    )


def test_base_extractors_in_detector_equal_the_trained_base_models(trained):
    detector = torch.load(trained["model"], weights_only=True)["state_dict"]
    for name, result in trained["base"].items():
        base = torch.load(result.path, weights_only=True)["state_dict"]
        for key, value in base.items():
            if not key.startswith("fc."):
                assert torch.equal(detector[f"extractors.{name}.{key}"], value)


def test_class_weights_are_inverse_counts_and_balance_the_loss():
    counts = np.array([10, 30, 60])
    weights = class_weights(counts, "fusion")
    assert torch.allclose(weights, torch.tensor([0.1, 1 / 30, 1 / 60]))
    torch.manual_seed(0)
    targets = torch.tensor([0] * 10 + [1] * 30 + [2] * 60)
    logits = torch.randn(100, 3)
    weighted = torch.nn.CrossEntropyLoss(weight=weights)(logits, targets)
    per_sample = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    per_class_mean = torch.stack([per_sample[targets == c].mean() for c in range(3)])
    # w_c = 1/n_c makes every class weigh the same, whatever its size.
    assert torch.allclose(weighted, per_class_mean.mean())
    with pytest.raises(DfxError, match="^the baseline training set has no gan images.$"):
        class_weights(np.array([5, 0, 3]), "baseline")
    with pytest.raises(DfxError, match="^the fusion training set has no dm, real images.$"):
        class_weights(np.array([0, 4, 0]), "fusion")


def test_loss_weight_is_what_the_weighted_mean_divides_by():
    loss_fn = torch.nn.CrossEntropyLoss(weight=class_weights(np.array([10, 30, 60]), "fusion"))
    targets = torch.tensor([0, 2, 2, 1])
    logits = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    assert loss_weight(loss_fn, targets) == pytest.approx(1 / 10 + 2 / 60 + 1 / 30)
    # Summed loss / weight sum is the weighted mean: what lets batches of any size be averaged.
    summed = summed_loss(loss_fn, logits, targets) / loss_weight(loss_fn, targets)
    assert summed == pytest.approx(float(loss_fn(logits, targets)), rel=1e-6)
    assert loss_weight(torch.nn.CrossEntropyLoss(), targets) == 4.0
    assert loss_weight(loss_fn, targets[:0]) == 0.0


def test_loading_a_base_model_where_a_detector_is_needed_fails(trained):
    with pytest.raises(DfxError, match="base-model file, but a detector file"):
        load_model_file(trained["base"]["dm"].path, DETECTOR_FORMAT)


def test_seed_makes_training_repeatable(manifest_path, tmp_path):
    from dfx.engine.base_training import train_base
    from dfx.engine.configs import BaseTrainConfig

    manifest = read_manifest(manifest_path)
    config = BaseTrainConfig(
        backbone="tiny",
        weights="none",
        image_size=32,
        epochs=2,
        batch_size=16,
        lr=1e-3,
        device="cpu",
        workers=0,
        seed=7,
    )
    first = train_base(manifest, "dm", config, out=tmp_path / "a" / "dm.pt")
    second = train_base(manifest, "dm", config, out=tmp_path / "b" / "dm.pt")
    other = train_base(
        manifest, "dm", BaseTrainConfig(**{**config.__dict__, "seed": 8}), out=tmp_path / "c.pt"
    )
    weights = [torch.load(r.path, weights_only=True)["state_dict"] for r in (first, second, other)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])


def test_fusion_training_names_a_class_missing_from_its_split(trained, tmp_path):
    import dataclasses

    from dfx.engine.configs import FusionTrainConfig
    from dfx.engine.fusion_training import train_fusion

    manifest = read_manifest(trained["manifest"])
    rows = [row for row in manifest.rows if row.role != "fusion" or row.label == "dm"]
    base = {name: result.path for name, result in trained["base"].items()}
    config = FusionTrainConfig(epochs=1, device="cpu", workers=0)
    with pytest.raises(DfxError, match=r"^the manifest's fusion role has no gan, real images\.$"):
        train_fusion(dataclasses.replace(manifest, rows=rows), base, config, out=tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()


def test_a_base_model_file_records_its_best_epochs_validation(trained):
    result = trained["base"]["gan"]
    metrics = load_model_file(result.path, BASE_FORMAT).metrics
    epochs = [json.loads(line) for line in result.history_path.read_text().splitlines()]
    best = epochs[result.best_epoch - 1]
    assert metrics["best_epoch"] == result.best_epoch == best["epoch"]
    assert metrics["validation"] == {"loss": best["val_loss"], "accuracy": best["val_accuracy"]}
    assert best["val_loss"] == min(epoch["val_loss"] for epoch in epochs)


def test_train_base_says_which_split_lacks_images(manifest_path, tmp_path):
    import dataclasses

    from dfx.engine.base_training import train_base
    from dfx.engine.configs import BaseTrainConfig

    manifest = read_manifest(manifest_path)
    only_gan = [row for row in manifest.rows if row.role != "base" or row.label == "gan"]
    gan_count = sum(row.label == "gan" for row in manifest.select("base"))
    config = BaseTrainConfig(backbone="tiny", weights="none", image_size=32, device="cpu")
    expected = (
        f"the manifest's base role has {gan_count} gan image(s) and 0 other image(s); "
        "training a gan model needs both."
    )
    with pytest.raises(DfxError) as raised:
        train_base(
            dataclasses.replace(manifest, rows=only_gan), "gan", config, out=tmp_path / "gan.pt"
        )
    assert str(raised.value) == expected


def test_seed_salts_are_distinct_and_the_base_models_keep_their_class_index():
    from dfx.classes import class_index
    from dfx.engine.training import SEED_SALTS

    assert len(set(SEED_SALTS.values())) == len(SEED_SALTS)
    assert {name: SEED_SALTS[name] for name in CLASSES} == {n: class_index(n) for n in CLASSES}
    assert (SEED_SALTS["fusion"], SEED_SALTS["baseline"]) == (3, 7)


# --- --quiet, --val-fraction 0, reduced precision and --max-pixels in training ---


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
