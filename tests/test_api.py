"""The Python API: load a detector and classify paths and in-memory images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import dfx
from dfx.errors import DfxError
from dfx.metrics import binary_metrics, multiclass_metrics, target_metrics
from tests.compare import assert_same_up_to_rounding


def test_predict_paths_and_pil_images(trained):
    detector = dfx.load_detector(trained["model"], device="cpu")
    data = trained["manifest"].parent / "data"
    path = sorted((data / "gan" / "toygan-b").iterdir())[0]
    with Image.open(path) as opened:
        image = opened.convert("L")  # any mode is accepted and converted to RGB
    predictions = detector.predict([path, image, path.parent / "absent.png"])
    assert [p.path for p in predictions] == [
        str(path),
        "<image #1>",
        str(path.parent / "absent.png"),
    ]
    first, second, missing = predictions
    assert first.error is None and first.label in dfx.CLASSES
    assert set(first.to_dict()) == {
        "path",
        "label",
        "probs",
        "p_fake",
        "fake",
        "provenance",
        "warning",
        "error",
    }
    assert first.fake == (first.p_fake >= detector.threshold)
    assert json.loads(json.dumps(first.to_dict())) == first.to_dict()
    assert second.error is None
    assert missing.label is None and missing.error == "no such file or folder"
    assert missing.to_dict() == {"path": missing.path, "error": "no such file or folder"}


def test_batching_does_not_change_results(trained):
    detector = dfx.load_detector(trained["model"], device="cpu")
    data = trained["manifest"].parent / "data"
    paths = sorted((data / "dm" / "toydm-a").iterdir())[:7]
    one = [p.to_dict() for p in detector.predict(paths, batch_size=1)]
    many = [p.to_dict() for p in detector.predict(paths, batch_size=4)]
    # Other batches, other kernels: probabilities within rounding, the same decisions.
    assert_same_up_to_rounding(one, many)


def test_iter_predict_streams_batches_in_input_order(trained):
    detector = dfx.load_detector(trained["model"], device="cpu")
    data = trained["manifest"].parent / "data"
    paths = sorted((data / "real" / "photo").iterdir())[:4]
    paths.insert(1, data / "absent.png")
    batches = list(detector.iter_predict(paths, batch_size=2, workers=0))
    assert [len(batch) for batch in batches] == [2, 2, 1]
    streamed = [p for batch in batches for p in batch]
    assert [p.path for p in streamed] == [str(p) for p in paths]
    assert streamed[1].error == "no such file or folder"
    # The unreadable file leaves its batch one image short, so compare within rounding.
    whole = [p.to_dict() for p in detector.predict(paths, batch_size=2)]
    assert_same_up_to_rounding([p.to_dict() for p in streamed], whole)


def test_load_detector_errors(trained, tmp_path):
    with pytest.raises(DfxError, match="does not exist"):
        dfx.load_detector(tmp_path / "nothing.pt")
    with pytest.raises(DfxError, match="base-model file"):
        dfx.load_detector(trained["base"]["real"].path)


def test_metrics_match_hand_computed_values():
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0])
    multiclass = multiclass_metrics(y_true, y_pred)
    assert multiclass["accuracy"] == pytest.approx(4 / 6)
    assert multiclass["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    # per-class F1: dm 1/2, gan 4/5, real 2/3
    assert multiclass["f1_macro"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    is_fake = np.array([1, 1, 1, 0])
    p_fake = np.array([0.9, 0.4, 0.8, 0.3])
    binary = binary_metrics(is_fake, p_fake, p_fake > 0.5)
    assert binary["accuracy"] == pytest.approx(0.75)
    assert binary["f1"] == pytest.approx(0.8)
    assert binary["auc"] == pytest.approx(1.0) and binary["ap"] == pytest.approx(1.0)
    assert binary_metrics(np.array([1, 1]), np.array([0.2, 0.9]), np.array([0, 1]))["auc"] is None
    table1 = target_metrics(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 1]))
    assert table1 == {"accuracy": 0.5, "recall": 0.5, "precision": 0.5, "f1": 0.5}


def test_worker_processes_give_the_same_results(trained):
    """Transforms are picklable, so DataLoader workers (fork or spawn) can run them."""
    import pickle

    from dfx.data.dataset import ImageDataset
    from dfx.data.perturbations import JpegCompression
    from dfx.data.transforms import Preprocessing

    dataset = ImageDataset(["a.png"], [0], Preprocessing(32), JpegCompression(50))
    assert pickle.loads(pickle.dumps(dataset)).perturbation == JpegCompression(50)

    detector = dfx.load_detector(trained["model"], device="cpu")
    data = trained["manifest"].parent / "data"
    paths = sorted((data / "real" / "texture").iterdir())[:6]
    inline = detector.predict(paths, batch_size=4, workers=0)
    workers = detector.predict(paths, batch_size=4, workers=2)
    assert [p.to_dict() for p in inline] == [p.to_dict() for p in workers]


def test_in_memory_and_file_images_are_converted_alike(tmp_path):
    from dfx.data.dataset import ImageDataset
    from dfx.data.transforms import Preprocessing

    rgba = Image.new("RGBA", (8, 8), (200, 100, 50, 0))
    rgba.putpixel((0, 0), (10, 20, 30, 255))
    rgba.save(tmp_path / "alpha.png")
    dataset = ImageDataset([rgba, tmp_path / "alpha.png"], None, Preprocessing(8))
    from_memory, from_file = dataset[0][0], dataset[1][0]
    assert torch.equal(from_memory, from_file)
