"""dfx split: layouts, deterministic and stable roles, clear errors."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dfx.data.layout import scan_dataset
from dfx.data.manifest import make_manifest, read_manifest, role_of, write_manifest
from dfx.errors import DfxError


def _image(path: Path, value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)


def _rows(path: Path) -> dict[str, str]:
    manifest = read_manifest(path)
    return {row.path: row.role for row in manifest.rows}


def test_roles_follow_the_ratios_per_group():
    paths = [f"gan/stylegan/{i:05d}.png" for i in range(20000)]
    counts = Counter(role_of(p, 0, (0.4, 0.4, 0.2)) for p in paths)
    assert abs(counts["base"] / 20000 - 0.4) < 0.015
    assert abs(counts["fusion"] / 20000 - 0.4) < 0.015
    assert abs(counts["test"] / 20000 - 0.2) < 0.015
    assert role_of(paths[0], 0, (0.4, 0.4, 0.2)) == role_of(paths[0], 0, (0.4, 0.4, 0.2))
    other_seed = Counter(
        role_of(p, 0, (0.4, 0.4, 0.2)) == role_of(p, 1, (0.4, 0.4, 0.2)) for p in paths
    )
    assert other_seed[False] > 5000  # a new seed draws a new split


def test_split_is_deterministic_and_stable(data_dir, tmp_path):
    first = write_manifest(make_manifest(data_dir), tmp_path / "a.csv")
    second = write_manifest(make_manifest(data_dir), tmp_path / "b.csv")
    assert first.read_bytes().replace(b"a.csv", b"") == second.read_bytes().replace(b"b.csv", b"")

    grown = tmp_path / "grown"
    shutil.copytree(data_dir, grown)
    for i in range(30):
        _image(grown / "real" / "newsource" / f"extra{i}.png", i)
    before = _rows(write_manifest(make_manifest(grown.parent / "grown"), tmp_path / "c.csv"))
    original = _rows(first)
    assert len(before) == len(original) + 30
    assert all(before[path] == role for path, role in original.items())


def test_manifest_records_its_data_folder(data_dir, tmp_path):
    path = write_manifest(make_manifest(data_dir, seed=3), tmp_path / "sub" / "m.csv")
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# dfx-manifest root=")
    assert lines[1] == "path,label,generator,split,size,hash"
    manifest = read_manifest(path)
    assert manifest.root == data_dir.resolve()
    assert manifest.seed == 3
    assert {row.label for row in manifest.rows} == {"dm", "gan", "real"}
    assert all(manifest.absolute(row).is_file() for row in manifest.rows)


def test_official_folder_names_and_non_images(tmp_path):
    data = tmp_path / "data"
    _image(data / "dm_generated" / "SD14" / "a.png")
    _image(data / "gan_generated" / "StyleGAN2" / "b.png")
    _image(data / "real" / "coco" / "c.png")
    (data / "real" / "coco" / "notes.txt").write_text("not an image")
    # The extension lies; the content decides.
    (data / "real" / "coco" / "photo.dat").write_bytes((data / "real/coco/c.png").read_bytes())
    scan = scan_dataset(data)
    assert {(r.label, r.generator) for r in scan.records} == {
        ("dm", "SD14"),
        ("gan", "StyleGAN2"),
        ("real", "coco"),
    }
    assert "real/coco/photo.dat" in [r.path for r in scan.records]
    assert scan.skipped == ["real/coco/notes.txt"]


def test_binary_layout_is_scanned_but_not_split(tmp_path):
    data = tmp_path / "wang"
    _image(data / "progan" / "0_real" / "r.png")
    _image(data / "progan" / "1_fake" / "f.png")
    scan = scan_dataset(data)
    assert scan.layout == "binary"
    assert {(r.label, r.generator) for r in scan.records} == {
        ("real", "progan"),
        ("fake", "progan"),
    }
    with pytest.raises(DfxError, match="binary"):
        make_manifest(data)


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda d: d.mkdir(), "neither class folders"),
        (lambda d: (d / "real").mkdir(parents=True), "no image files"),
        (lambda d: None, "does not exist"),
    ],
)
def test_bad_data_folders(tmp_path, setup, message):
    data = tmp_path / "data"
    setup(data)
    with pytest.raises(DfxError, match=message):
        make_manifest(data)


def test_bad_ratios_are_refused(data_dir):
    with pytest.raises(DfxError, match="sum to 1"):
        make_manifest(data_dir, (0.5, 0.5, 0.5))


def test_manifest_with_missing_files_is_refused(data_dir, tmp_path):
    path = write_manifest(make_manifest(data_dir), tmp_path / "m.csv")
    text = path.read_text().replace("real/photo/", "real/nowhere/", 2)
    path.write_text(text)
    with pytest.raises(DfxError, match="2 file\\(s\\) missing"):
        read_manifest(path)


def test_malformed_manifests_are_refused(tmp_path):
    bad_columns = tmp_path / "cols.csv"
    bad_columns.write_text("file,label\nx.png,real\n")
    with pytest.raises(DfxError, match="lacks the column"):
        read_manifest(bad_columns)
    bad_label = tmp_path / "label.csv"
    bad_label.write_text("path,label,generator,split\nx.png,cat,g,base\n")
    with pytest.raises(DfxError, match="line 2"):
        read_manifest(bad_label, check_files=False)
    with pytest.raises(DfxError, match="does not exist"):
        read_manifest(tmp_path / "absent.csv")
    header = "# dfx-manifest root=. seed=0\npath,label,generator,split\n"
    counted = tmp_path / "counted.csv"
    counted.write_text(header + "a.png,real,g,base\nb.png,cat,g,base\n")
    with pytest.raises(DfxError, match="line 4 has label 'cat'"):  # numbered as in the file
        read_manifest(counted, check_files=False)
    short = tmp_path / "short.csv"
    short.write_text(header + "a.png\n")
    with pytest.raises(DfxError, match="line 3 has too few fields"):
        read_manifest(short, check_files=False)
    latin = tmp_path / "latin.csv"
    latin.write_bytes(header.encode() + "caf\xe9.png,real,g,base\n".encode("latin-1"))
    with pytest.raises(DfxError, match="not UTF-8"):
        read_manifest(latin, check_files=False)
    with_bom = tmp_path / "bom.csv"
    with_bom.write_bytes(b"\xef\xbb\xbf" + (header + "a.png,real,g,test\n").encode())
    assert [r.path for r in read_manifest(with_bom, check_files=False).rows] == ["a.png"]


def test_written_files_get_ordinary_permissions(data_dir, tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        path = write_manifest(make_manifest(data_dir), tmp_path / "shared.csv")
        assert path.stat().st_mode & 0o777 == 0o644
        assert not list(tmp_path.glob(".shared.csv.*"))  # no temporary file left behind
    finally:
        os.umask(umask)


def test_written_rows_record_each_file_s_size_and_digest(data_dir, tmp_path):
    # Without them a changed image would go unnoticed when the manifest is read again.
    from dfx.fingerprint import file_digest

    rows = read_manifest(write_manifest(make_manifest(data_dir), tmp_path / "m.csv")).rows
    for row in rows[::100]:
        image = data_dir / row.path
        assert (row.size, row.hash) == (image.stat().st_size, file_digest(image))
