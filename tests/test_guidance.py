"""dfx split --from-guidance: the official release's guidance.csv as a dfx manifest."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from dfx.data.manifest import make_manifest, read_manifest
from dfx.interop.guidance import manifest_from_guidance
from tests.helpers import assert_user_error, invoke

ROLE_OF_LABEL = {0: "base", 1: "fusion", 2: "test"}


def write_guidance(path: Path, rows: list[tuple]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["label", "image_path", "model"])
        writer.writerows(rows)
    return path


def test_guidance_roles_become_the_manifest(data_dir, tmp_path):
    records = make_manifest(data_dir).rows
    labels = {row.path: (i * 7) % 3 for i, row in enumerate(records)}
    rows = [(labels[r.path], f"/{r.path}", r.generator) for r in records]
    guidance = write_guidance(tmp_path / "guidance.csv", rows)
    out = tmp_path / "manifest.csv"
    result = invoke("split", "--from-guidance", guidance, data_dir, "--out", out)
    assert result.exit_code == 0, result.output
    assert "Images per role" in result.stdout
    assert result.stderr.strip() == f"wrote {out} (600 images)"  # a notice, no warnings
    manifest = read_manifest(out)
    assert len(manifest.rows) == len(records) == 600
    assert {row.path: row.role for row in manifest.rows} == {
        path: ROLE_OF_LABEL[label] for path, label in labels.items()
    }
    assert {row.path: row.generator for row in manifest.rows} == {
        r.path: r.generator for r in records
    }
    assert "seed=" not in out.read_text().splitlines()[0]


@pytest.fixture()
def official_data(data_dir, tmp_path) -> Path:
    """A few synthetic images in the release's folder names, plus a non-image file."""
    root = tmp_path / "datasets"
    sources = {
        "dm_generated/latent_diffusion": data_dir / "dm" / "toydm-a",
        "gan_generated/StyleGAN2": data_dir / "gan" / "toygan-a",
        "real/FFHQ": data_dir / "real",
    }
    for target, source in sources.items():
        (root / target).mkdir(parents=True)
        for i, image in enumerate(sorted(p for p in source.rglob("*.png"))[:3]):
            shutil.copy(image, root / target / f"{i:04d}.png")
    (root / "real" / "FFHQ" / "notes.png").write_text("not an image")
    (root / "other").mkdir()
    shutil.copy(root / "real" / "FFHQ" / "0000.png", root / "other" / "0000.png")
    return root


def test_guidance_problems_are_reported_and_left_out(official_data, tmp_path):
    root = official_data
    rows = [
        (0, "/gan_generated/StyleGAN2/0000.png", "StyleGAN2"),
        (1, str(root / "gan_generated" / "StyleGAN2" / "0001.png"), "stylegan2"),
        (2, "\\dm_generated\\latent_diffusion\\0000.png", "latent_diffusion"),
        (0, "/dm_generated/latent_diffusion/0001.png", "dalle2"),
        (1, "/real/FFHQ/0000.png", "FFHQ"),
        (2, "/real/FFHQ/0000.png", "FFHQ"),
        (7, "/real/FFHQ/0001.png", "FFHQ"),
        (0, "/gan_generated/StyleGAN2/9999.png", "StyleGAN2"),
        (1, "/../secret/0000.png", "x"),
        (1, "/elsewhere/gan_generated/StyleGAN2/0002.png", "StyleGAN2"),
        (2, "/real/FFHQ/notes.png", "FFHQ"),
        (2, "/other/0000.png", "other"),
    ]
    guidance = write_guidance(tmp_path / "guidance.csv", rows)
    out = tmp_path / "m.csv"
    result = invoke("split", "--from-guidance", guidance, root, "--out", out, "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["n"] == 5
    left_out = {(i["line"], i["reason"]) for i in report["guidance"]["left_out"]}
    assert left_out == {
        (7, "repeats an earlier row"),
        (8, "label '7' is not 0 (base), 1 (fusion) or 2 (test)"),
        (9, "no such file"),
        (10, f"outside the data folder {root}"),
        (11, f"outside the data folder {root}"),
        (12, "not an image file"),
        (13, "not inside a class folder (dm, gan, real, dm_generated, gan_generated)"),
    }
    assert [i["line"] for i in report["guidance"]["model_mismatches"]] == [5]
    assert report["guidance"]["unlisted"] == 9 - 5
    # An image-named file that is no image is an unreadable image: a failure, not a skip.
    assert report["skip_reasons"] == {}
    assert report["failures"] == [
        {"path": "real/FFHQ/notes.png", "error": "not an image Pillow can decode"}
    ]
    assert "left out 7 of 12 guidance row(s):" in result.stderr
    assert "line 5: /dm_generated/latent_diffusion/0001.png: model 'dalle2'" in result.stderr
    manifest = read_manifest(out)
    assert [(r.path, r.label, r.generator, r.role) for r in manifest.rows] == [
        ("dm_generated/latent_diffusion/0000.png", "dm", "latent_diffusion", "test"),
        ("dm_generated/latent_diffusion/0001.png", "dm", "latent_diffusion", "base"),
        ("gan_generated/StyleGAN2/0000.png", "gan", "StyleGAN2", "base"),
        ("gan_generated/StyleGAN2/0001.png", "gan", "StyleGAN2", "fusion"),
        ("real/FFHQ/0000.png", "real", "FFHQ", "fusion"),
    ]


def test_guidance_errors(official_data, tmp_path):
    root = official_data
    absent = write_guidance(tmp_path / "absent.csv", [(0, "/real/FFHQ/7777.png", "FFHQ")])
    assert_user_error(
        invoke("split", "--from-guidance", absent, root),
        "none of the 1 rows",
        "line 2, /real/FFHQ/7777.png: no such file",
    )
    wrong = tmp_path / "manifest-like.csv"
    wrong.write_text("path,label,generator,split\nreal/FFHQ/0000.png,real,FFHQ,test\n")
    assert_user_error(
        invoke("split", "--from-guidance", wrong, root), "lacks the column(s) image_path"
    )
    good = write_guidance(tmp_path / "good.csv", [(0, "/real/FFHQ/0000.png", "FFHQ")])
    assert_user_error(invoke("split", "--from-guidance", good, root, "--seed", "3"), "do not apply")
    assert_user_error(
        invoke("split", "--from-guidance", tmp_path / "nope.csv", root), "does not exist"
    )
    assert_user_error(invoke("split", "--from-guidance", good, tmp_path / "nodata"), "nodata")
    header_only = tmp_path / "empty.csv"
    header_only.write_text("label,image_path,model\n")
    assert_user_error(invoke("split", "--from-guidance", header_only, root), "has no rows")


def test_guidance_result_from_the_library(official_data, tmp_path):
    guidance = write_guidance(
        tmp_path / "g.csv", [("1.0", "/gan_generated/StyleGAN2/0002.png", "")]
    )
    result = manifest_from_guidance(guidance, official_data)
    assert [(r.path, r.role) for r in result.manifest.rows] == [
        ("gan_generated/StyleGAN2/0002.png", "fusion")
    ]
    assert result.rows == 1 and not result.left_out and not result.model_mismatches
    assert len(result.unlisted) == 8


def test_absolute_paths_through_a_symlinked_data_folder(official_data, tmp_path):
    linked = tmp_path / "linked"
    linked.symlink_to(official_data.resolve(), target_is_directory=True)
    rows = [
        ("0", f"{linked}/gan_generated/StyleGAN2/0002.png", ""),  # DATA as the user names it
        ("2", f"{official_data.resolve()}/real/FFHQ/0001.png", ""),  # DATA resolved
    ]
    result = manifest_from_guidance(write_guidance(tmp_path / "g.csv", rows), linked)
    assert not result.left_out, result.left_out
    assert sorted((r.path, r.role) for r in result.manifest.rows) == [
        ("gan_generated/StyleGAN2/0002.png", "base"),
        ("real/FFHQ/0001.png", "test"),
    ]
