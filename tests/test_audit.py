"""dfx audit: container shortcuts, copies across labels and roles, plots, bad files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from dfx import synthetic
from dfx.cli import app
from dfx.data.audit import audit
from dfx.data.copies import perceptual_hash
from dfx.data.decoding import load_rgb
from dfx.data.record import ImageRecord

runner = CliRunner()


def _audit_json(*arguments: str) -> tuple[int, dict, str]:
    result = runner.invoke(app, ["audit", *arguments, "--json"])
    document = json.loads(result.stdout) if result.stdout.strip() else {}
    return result.exit_code, document, result.stderr


@pytest.fixture(scope="module")
def jpeg_real(tmp_path_factory) -> Path:
    """The synthetic set with every real image re-saved as JPEG (quality 90), fakes PNG."""
    root = tmp_path_factory.mktemp("shortcut") / "data"
    synthetic.write_dataset(root, per_generator=40, image_size=32, seed=1)
    for path in sorted((root / "real").rglob("*.png")):
        with Image.open(path) as image:
            image.save(path.with_suffix(".jpg"), quality=90)
        path.unlink()
    return root


def test_a_set_whose_real_images_are_jpeg_is_flagged(jpeg_real):
    code, document, stderr = _audit_json(str(jpeg_real))
    assert code == 0
    assert document["shortcut_score"]["real_vs_fake"] > 0.9
    assert document["shortcut_score_by_trait"]["format"] > 0.9
    assert document["shortcut_score_by_trait"]["size"] == pytest.approx(0.5)
    assert document["shortcut_warning"] is True and document["advice"]
    assert "warning:" in stderr and "--qf" in stderr
    real = next(g for g in document["classes"] if g["label"] == "real")
    assert real["formats"] == {"JPEG": 80} and real["jpeg_quality"]["median"] == 90


def test_the_plain_synthetic_set_is_not_flagged(data_dir):
    code, document, stderr = _audit_json(str(data_dir))
    assert code == 0
    assert document["n"] == 600
    assert document["shortcut_score"]["real_vs_fake"] < 0.8
    assert document["shortcut_score"]["three_class"] < 0.8
    assert document["shortcut_score_by_trait"]["format"] == pytest.approx(0.5)
    assert document["shortcut_warning"] is False and "warning" not in stderr
    assert document["copy_counts"]["exact"] == 0
    # Smooth crops of the same two photos share hashes, but their colours tell them apart.
    assert document["copy_counts"]["near"] == 0


def test_copies_across_labels_and_roles_are_listed(tmp_path):
    data = tmp_path / "data"
    synthetic.write_dataset(data, per_generator=6, image_size=64, seed=2)
    original = "real/photo/real-photo-00001.png"
    shutil.copy(data / original, data / "gan/toygan-a/copy.png")  # same bytes, other label
    (data / "real/mirror").mkdir()
    with Image.open(data / original) as image:  # same picture, resized and re-encoded
        image.resize((48, 48), Image.Resampling.BICUBIC).save(
            data / "real/mirror/again.jpg", quality=90
        )
    rows = [(r.path, r.label, r.generator) for r in _records(data)]
    lines = ["path,label,generator,split"] + [
        f"{path},{label},{generator},{'test' if 'mirror' in path else 'base'}"
        for path, label, generator in rows
    ]
    (data / "manifest.csv").write_text("\n".join(lines) + "\n")

    code, document, _ = _audit_json("--manifest", str(data / "manifest.csv"))
    assert code == 0
    exact = [g for g in document["copies"] if g["kind"] == "exact"]
    assert exact == [
        {
            "kind": "exact",
            "paths": ["gan/toygan-a/copy.png", original],
            "labels": ["gan", "real"],
            "roles": ["base", "base"],
            "distance": 0,
            "crosses": ["label"],
        }
    ]
    near = [g for g in document["copies"] if g["kind"] == "near"]
    assert [g["paths"] for g in near] == [
        ["gan/toygan-a/copy.png", "real/mirror/again.jpg"],
        ["real/mirror/again.jpg", original],
    ]
    assert [g["crosses"] for g in near] == [["label", "role"], ["role"]]
    assert near[0]["distance"] <= 4
    assert document["copy_counts"] == {
        "exact": 1,
        "exact_across_labels": 1,
        "exact_across_roles": 0,
        "near": 2,
        "near_across_labels": 1,
        "near_across_roles": 2,
    }
    table = runner.invoke(app, ["audit", "--manifest", str(data / "manifest.csv")])
    assert "Copies across labels or roles" in table.stdout
    assert "gan/toygan-a/copy.png (gan, base)" in table.stdout


def _records(data: Path):
    from dfx.data.layout import scan_dataset

    return scan_dataset(data).records


def test_perceptual_hash_separates_different_images(data_dir):
    paths = sorted((data_dir / "real" / "photo").iterdir())[:20]
    hashes = [perceptual_hash(load_rgb(p)) for p in paths]
    distances = [bin(a ^ b).count("1") for i, a in enumerate(hashes) for b in hashes[i + 1 :]]
    assert min(distances) > 4  # no false near-copies among distinct pictures


def test_plots_and_json_file_are_written(jpeg_real, tmp_path):
    result = runner.invoke(
        app,
        [
            "audit",
            str(jpeg_real),
            "--plots",
            str(tmp_path / "p"),
            "--json",
            "-o",
            str(tmp_path / "a"),
        ],
    )
    assert result.exit_code == 0, result.output
    for name in ("sizes.png", "jpeg_quality.png"):
        with Image.open(tmp_path / "p" / name) as image:
            assert image.format == "PNG" and image.width > 300
    assert json.loads((tmp_path / "a").read_text())["n"] == 240
    assert "Container traits" in result.stdout and "wrote" not in result.stdout
    assert "wrote" in result.stderr  # a notice, hidden by --quiet


def test_bad_files_are_reported_and_exit_1(tmp_path):
    data = tmp_path / "data"
    synthetic.write_dataset(data, per_generator=4, image_size=32, seed=0)
    broken = data / "gan/toygan-b/broken.png"
    broken.write_bytes((data / "gan/toygan-b/gan-toygan-b-00000.png").read_bytes()[:50])
    code, document, stderr = _audit_json(str(data))
    assert code == 1
    assert document["n"] == 24
    assert [f["path"] for f in document["failures"]] == ["gan/toygan-b/broken.png"]
    assert "broken.png" in stderr


def test_usage_errors(tmp_path):
    assert runner.invoke(app, ["audit"]).exit_code == 2
    result = runner.invoke(app, ["audit", str(tmp_path / "absent")])
    assert result.exit_code == 2 and "does not exist" in result.stderr


def test_library_audit_of_binary_layout_has_no_three_class_score(tmp_path):
    for folder in ("0_real", "1_fake"):
        (tmp_path / folder).mkdir()
        for i in range(6):
            Image.new("RGB", (16 + i, 16), (40 * i, 0, 0)).save(tmp_path / folder / f"{i}.png")
    records = [
        ImageRecord(f"{folder}/{i}.png", label, "-")
        for label, folder in (("real", "0_real"), ("fake", "1_fake"))
        for i in range(6)
    ]
    report = audit(tmp_path, records, workers=1)
    assert report.shortcut_score["three_class"] is None
    assert report.shortcut_score["real_vs_fake"] is not None


def test_a_class_of_fewer_than_two_images_has_a_null_score(tmp_path):
    for label, count in (("dm", 1), ("gan", 6), ("real", 6)):
        folder = tmp_path / "data" / label / "one"
        folder.mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (16 + i, 16), (30 * i, 0, 0)).save(folder / f"{i}.png")
    code, document, stderr = _audit_json(str(tmp_path / "data"))
    assert code == 0, stderr
    assert document["shortcut_score"]["three_class"] is None  # dm has one image
    assert isinstance(document["shortcut_score"]["real_vs_fake"], float)  # 7 fake, 6 real
    assert "null" in runner.invoke(app, ["audit", str(tmp_path / "data"), "--json"]).stdout


@pytest.mark.parametrize("real_jpegs, warned", [(12, True), (11, False)])
def test_the_warning_starts_exactly_at_0_8(tmp_path, real_jpegs, warned):
    """20 real and 20 fake images, the same pixels; only the real ones are ever JPEG. The
    tree finds every real JPEG and nothing else: a balanced accuracy of (12/20 + 1) / 2 =
    0.8 exactly, or (11/20 + 1) / 2 = 0.775."""
    picture = Image.new("RGB", (24, 24), (90, 120, 150))
    for folder, jpegs in (("0_real", real_jpegs), ("1_fake", 0)):
        (tmp_path / folder).mkdir()
        for i in range(20):
            if i < jpegs:
                picture.save(tmp_path / folder / f"{i}.jpg", quality=90)
            else:
                picture.save(tmp_path / folder / f"{i}.png")
    code, document, stderr = _audit_json(str(tmp_path))
    assert code == 0, stderr
    assert document["shortcut_warning_at"] == 0.8
    assert document["shortcut_score"]["real_vs_fake"] == pytest.approx(0.8 if warned else 0.775)
    assert document["shortcut_warning"] is warned
    assert ("warning: container traits alone tell the classes apart" in stderr) is warned
