"""dfx split with duplicate files: copies share a role, copies under two labels are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dfx import synthetic
from dfx.cli import app
from dfx.data.manifest import LabelConflictError, make_manifest

runner = CliRunner()


@pytest.fixture()
def small_data(tmp_path) -> Path:
    root = tmp_path / "data"
    synthetic.write_dataset(root, per_generator=12, image_size=32, seed=0)
    return root


def _roles(manifest) -> dict[str, str]:
    return {row.path: row.role for row in manifest.rows}


def test_copies_share_a_role_and_old_roles_stay(small_data):
    before = _roles(make_manifest(small_data))
    originals = sorted(p for p in before if p.startswith("real/photo/"))
    copies_dir = small_data / "real" / "mirror"
    copies_dir.mkdir()
    for name in originals:
        shutil.copy(small_data / name, copies_dir / Path(name).name)
    manifest = make_manifest(small_data)
    after = _roles(manifest)
    for name in originals:
        assert after[f"real/mirror/{Path(name).name}"] == after[name]
    # The roles of the images already there did not move.
    assert all(after[path] == role for path, role in before.items())
    # With 12 copies of a 40/40/20 draw, path-based roles would almost surely differ somewhere.
    assert len({after[name] for name in originals}) > 1
    assert len(manifest.copies) == len(originals)
    assert manifest.conflicts == []


def test_a_copy_under_another_label_is_refused_with_the_pair_named(small_data):
    shutil.copy(small_data / "real/photo/real-photo-00002.png", small_data / "gan/toygan-a/x.png")
    with pytest.raises(LabelConflictError) as caught:
        make_manifest(small_data)
    message = str(caught.value)
    assert "gan/toygan-a/x.png (gan) = real/photo/real-photo-00002.png (real)" in message
    assert "`drop_label_conflicts`" in message  # the command line names its option

    result = runner.invoke(app, ["split", str(small_data)])
    assert result.exit_code == 2
    assert "gan/toygan-a/x.png (gan) = real/photo/real-photo-00002.png (real)" in result.output
    assert "pass --drop-label-conflicts to leave" in " ".join(result.output.split())
    assert not (small_data.parent / "manifest.csv").exists()


def test_drop_label_conflicts_leaves_every_copy_out(small_data):
    shutil.copy(small_data / "real/photo/real-photo-00002.png", small_data / "gan/toygan-a/x.png")
    out = small_data.parent / "m.csv"
    result = runner.invoke(
        app, ["split", str(small_data), "--out", str(out), "--drop-label-conflicts", "--json"]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["label_conflicts"] == [
        {
            "paths": ["gan/toygan-a/x.png", "real/photo/real-photo-00002.png"],
            "labels": ["gan", "real"],
        }
    ]
    assert document["n"] == 6 * 12 - 1
    text = out.read_text()
    assert "x.png" not in text and "real-photo-00002.png" not in text


def test_same_fingerprint_but_different_bytes_are_not_copies(tmp_path):
    from dfx.data.copies import copy_groups

    (tmp_path / "a").write_bytes(b"x" * 300_000)
    (tmp_path / "b").write_bytes(b"x" * 150_000 + b"y" + b"x" * 149_999)
    (tmp_path / "c").write_bytes(b"x" * 300_000)
    assert copy_groups(tmp_path, {"a": "k", "b": "k", "c": "k"}) == [["a", "c"]]
