"""Crash-safe writes and manifest integrity."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch

import dfx
from dfx.atomic import atomic_write
from dfx.data.manifest import make_manifest, read_manifest, write_manifest
from dfx.errors import DfxError
from dfx.fingerprint import file_digest
from tests.helpers import TINY_RUN, assert_user_error, invoke, private_copy


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_exception_inside_an_atomic_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old and complete\n")
    with pytest.raises(RuntimeError), atomic_write(target) as handle:
        handle.write("new but half")
        raise RuntimeError("crash in the middle")
    assert target.read_text() == "old and complete\n"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("binary", [False, True])
def test_killed_process_leaves_the_old_file_and_its_litter_is_cleaned(tmp_path, binary):
    target = tmp_path / "model.pt"
    target.write_bytes(b"old and complete")
    mode = "wb" if binary else "w"
    data = "b'new but half'" if binary else "'new but half'"
    script = textwrap.dedent(
        f"""
        import os
        from dfx.atomic import atomic_write
        with atomic_write({str(target)!r}, {mode!r}) as handle:
            handle.write({data})
            handle.flush()
            os._exit(9)  # dies like a SIGKILL: no cleanup code runs
        """
    )
    done = subprocess.run([sys.executable, "-c", script], timeout=60)
    assert done.returncode == 9
    assert target.read_bytes() == b"old and complete"
    assert len(leftovers(tmp_path)) == 1  # the dead writer's temporary file
    with atomic_write(target, "wb") as handle:  # the next write of the file cleans it up
        handle.write(b"newer")
    assert target.read_bytes() == b"newer"
    assert leftovers(tmp_path) == []


def test_atomic_write_follows_symlinks_and_streams_into_pipes(tmp_path):
    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    with atomic_write(link) as handle:
        handle.write("new")
    assert link.is_symlink() and real.read_text() == "new"

    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this system")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []

    def write() -> None:
        with atomic_write(fifo) as handle:
            handle.write("through the pipe")

    # Both ends run in daemon threads with a deadline: opening a FIFO blocks until the
    # other end is open, and a test must fail rather than hang.
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()), daemon=True)
    writer = threading.Thread(target=write, daemon=True)
    reader.start()
    writer.start()
    writer.join(timeout=10)
    reader.join(timeout=10)
    if writer.is_alive() or reader.is_alive():
        for flags in (os.O_RDONLY | os.O_NONBLOCK, os.O_WRONLY | os.O_NONBLOCK):
            try:  # release whichever end still waits, so that no thread outlives the test
                os.close(os.open(fifo, flags))
            except OSError:
                pass
        pytest.fail("writing through the FIFO blocked for more than 10 seconds")
    assert received == ["through the pipe"] and fifo.exists() and not fifo.is_file()

    with pytest.raises(IsADirectoryError):
        with atomic_write(tmp_path) as handle:
            handle.write("never")


def test_every_writer_goes_through_atomic_write():
    # Writers of checkpoints, detector files, manifests, histories, reports and resume state.
    sources = {p.name: p.read_text() for p in Path(dfx.__file__).parent.rglob("*.py")}
    for name in ("checkpoint.py", "manifest.py", "loop.py", "report.py", "train_state.py"):
        assert "atomic_write(" in sources[name], name
    offenders = [
        name
        for name, text in sources.items()
        if name != "atomic.py"
        and any(w in text for w in ('open(path, "w', ".write_text(", ".write_bytes("))
    ]
    assert offenders == []


# --- Manifest integrity ------------------------------------------------------------------


@pytest.fixture()
def own_data(data_dir, tmp_path) -> Path:
    """A private copy of the synthetic data, free to be changed."""
    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    return copy


def test_manifest_records_size_and_fingerprint(own_data, tmp_path):
    manifest = read_manifest(write_manifest(make_manifest(own_data), tmp_path / "m.csv"))
    row = manifest.rows[0]
    assert row.size == manifest.absolute(row).stat().st_size
    assert row.hash == file_digest(manifest.absolute(row))
    assert manifest.fingerprinted


def change_files(own_data: Path, manifest) -> dict[str, str]:
    """Alter one test image in place (same size), grow one, delete one; return their paths."""
    tests = [row.path for row in manifest.select("test")]
    same_size, grown, deleted = tests[:3]
    first = own_data / same_size
    content = bytearray(first.read_bytes())
    content[-20] ^= 0xFF
    first.write_bytes(bytes(content))
    with open(own_data / grown, "ab") as handle:
        handle.write(b"\0")
    (own_data / deleted).unlink()
    return {"same_size": same_size, "grown": grown, "deleted": deleted}


def test_changed_and_missing_files_are_named_and_refused(own_data, tmp_path):
    path = write_manifest(make_manifest(own_data), tmp_path / "m.csv")
    changed = change_files(own_data, read_manifest(path))
    with pytest.raises(DfxError) as caught:
        read_manifest(path)
    message = str(caught.value)
    assert "1 file(s) missing" in message and changed["deleted"] in message
    assert "2 file(s) changed since it was written" in message
    assert changed["same_size"] in message and changed["grown"] in message
    # Only the rows that a run reads are checked: the base split is untouched.
    assert len(read_manifest(path, roles=("base",)).rows) == 600
    kept = read_manifest(path, allow_changed=True)
    assert len(kept.rows) == 597
    assert dict(kept.dropped) == {
        changed["same_size"]: "changed (content differs)",
        changed["grown"]: f"changed (size {(own_data / changed['grown']).stat().st_size - 1}"
        f" -> {(own_data / changed['grown']).stat().st_size} bytes)",
        changed["deleted"]: "missing",
    }


def test_commands_refuse_changed_files_unless_allowed(trained, own_data, tmp_path):
    path = write_manifest(make_manifest(own_data), tmp_path / "m.csv")
    changed = change_files(own_data, read_manifest(path))
    refused = invoke("evaluate", "--model", trained["model"], "-m", path, "--workers", "0")
    assert_user_error(refused, "changed since it was written", changed["grown"], "--allow-changed")
    report = tmp_path / "r.json"
    allowed = invoke(
        "evaluate", "--model", trained["model"], "-m", path, "--workers", "0",
        "--allow-changed", "--no-balanced", "-o", report,
    )  # fmt: skip
    assert allowed.exit_code == 0, allowed.output
    assert "left out 3 manifest file(s)" in allowed.stderr
    tests = len(read_manifest(path, check_files=False).select("test"))
    assert json.loads(report.read_text())["n"] == tests - 3  # 3 of them left out
    training = invoke(
        "train-base", "-m", path, "--target", "dm", "--backbone", "tiny", "--weights", "none",
        "--epochs", "1", "--device", "cpu", "--workers", "0", "--out", tmp_path / "b",
    )  # fmt: skip
    assert_user_error(training, "file(s) changed")


def test_old_manifests_without_fingerprints_still_work(trained, manifest_path, tmp_path):
    lines = manifest_path.read_text().splitlines()
    root = (manifest_path.parent / lines[0].split("root=")[1].split()[0]).resolve()
    old = tmp_path / "old.csv"
    body = [",".join(line.split(",")[:4]) for line in lines[1:]]
    old.write_text("\n".join([f"# dfx-manifest root={root}", *body]) + "\n")
    manifest = read_manifest(old)
    assert not manifest.fingerprinted and manifest.rows[0].hash is None
    result = invoke("evaluate", "--model", trained["model"], "-m", old, "--workers", "0")
    assert result.exit_code == 0, result.output
    assert "no size/hash columns" in " ".join(result.stderr.split())


# --- --allow-changed on training ---


def test_allow_changed_leaves_changed_training_images_out(little_data, tmp_path):
    manifest = private_copy(little_data, tmp_path)
    changed = next((manifest.parent / "data" / "real").rglob("*.png"))
    changed.write_bytes(next((manifest.parent / "data" / "gan").rglob("*.png")).read_bytes())
    args = ["train-baseline", "-m", manifest, *TINY_RUN, "-o", tmp_path / "model.pt"]
    refused = invoke(*args)
    assert_user_error(refused, "changed")
    allowed = invoke(*args, "--allow-changed")
    assert allowed.exit_code == 0, allowed.output
    assert changed.name in allowed.stderr
    counts = torch.load(tmp_path / "model.pt", weights_only=True)["metrics"]["counts"]
    roles = [line.split(",")[3] for line in manifest.read_text().splitlines()[2:]]
    assert counts["train"] + counts["val"] == sum(r in ("base", "fusion") for r in roles) - (
        1 if _role_of(manifest, changed) in ("base", "fusion") else 0
    )


def _role_of(manifest: Path, image: Path) -> str:
    relative = image.relative_to(manifest.parent / "data").as_posix()
    return next(
        line.split(",")[3]
        for line in manifest.read_text().splitlines()
        if line.startswith(relative)
    )
