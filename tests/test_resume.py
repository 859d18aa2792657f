"""Resume: a run killed mid-epoch and resumed ends with exactly the uninterrupted weights."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from dfx import synthetic
from dfx.classes import CLASSES
from dfx.data.manifest import make_manifest, write_manifest
from dfx.engine.batches import TensorBatches
from dfx.errors import TrainingInterrupted
from tests.helpers import TINY_RUN, assert_user_error, invoke

# Run in a child process: calls the CLI; if KILL_IN_EPOCH is set, the shuffle sampler of
# that epoch sends KILL_SIGNAL (SIGKILL by default) to its own process after KILL_AFTER
# indices (mid-epoch).
CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from dfx.data import shuffle

    # Ctrl-C as in a terminal, even when the suite was started with SIGINT ignored (a
    # background job of a non-interactive shell inherits SIG_IGN, and Python keeps it).
    signal.signal(signal.SIGINT, signal.default_int_handler)

    epoch_to_kill = int(os.environ.get("KILL_IN_EPOCH", "0"))
    original_iter = shuffle.EpochShuffleSampler.__iter__

    def dying_iter(self):
        epoch = self.epoch
        for count, index in enumerate(original_iter(self), start=1):
            if epoch == epoch_to_kill and count > int(os.environ["KILL_AFTER"]):
                os.kill(os.getpid(), getattr(signal, os.environ.get("KILL_SIGNAL", "SIGKILL")))
            yield index

    shuffle.EpochShuffleSampler.__iter__ = dying_iter
    from dfx.cli import app
    app(sys.argv[1:], prog_name="dfx")
    """
)


def run_child(args, kill_in_epoch: int = 0, signal: str = "SIGKILL"):
    env = os.environ | {
        "OMP_NUM_THREADS": "1",
        "KILL_IN_EPOCH": str(kill_in_epoch),
        "KILL_AFTER": "10",  # mid-epoch: the 'real' base model trains on about 20 images
        "KILL_SIGNAL": signal,
        "COLUMNS": "2000",
    }
    return subprocess.run(
        [sys.executable, "-c", CHILD, *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_same_weights(first: Path, second: Path) -> None:
    a = torch.load(first, weights_only=True)["state_dict"]
    b = torch.load(second, weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def history_without_times(path: Path) -> list[dict]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


@pytest.fixture(scope="module")
def small_manifest(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("resume") / "data"
    synthetic.write_dataset(root, per_generator=30, image_size=32, seed=4)
    return write_manifest(make_manifest(root), root.parent / "manifest.csv")


def base_args(manifest: Path, out: Path, *extra) -> list:
    return [
        "train-base", "-m", manifest, "--target", "real", "--backbone", "tiny",
        "--weights", "none", "--image-size", "32", "--epochs", "3", "--batch-size", "8",
        "--lr", "0.003", "--lr-step", "2", "--device", "cpu", "--workers", "0",
        "--out", out, *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def straight_run(small_manifest, tmp_path_factory) -> Path:
    """The uninterrupted run, in a child process like the interrupted ones."""
    out = tmp_path_factory.mktemp("straight")
    done = run_child(base_args(small_manifest, out))
    assert done.returncode == 0, done.stderr
    return out


def test_sigkill_mid_epoch_then_resume_gives_identical_weights(
    small_manifest, straight_run, tmp_path
):
    killed = run_child(base_args(small_manifest, tmp_path), kill_in_epoch=2)
    assert killed.returncode == -9, killed.stderr  # SIGKILL, in the middle of epoch 2
    state = torch.load(tmp_path / "real.state.pt", weights_only=True)
    assert state["epoch"] == 1
    assert not (tmp_path / "real.pt").exists()

    resumed = run_child(base_args(small_manifest, tmp_path, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch 1 of 3" in resumed.stderr
    assert_same_weights(straight_run / "real.pt", tmp_path / "real.pt")
    assert history_without_times(straight_run / "real.history.jsonl") == history_without_times(
        tmp_path / "real.history.jsonl"
    )
    # Nothing half-written is left behind by the kill.
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_real_sigint_prints_a_command_that_resumes_exactly(small_manifest, straight_run, tmp_path):
    stopped = run_child(base_args(small_manifest, tmp_path), kill_in_epoch=3, signal="SIGINT")
    assert stopped.returncode == 130, stopped.stderr
    message = " ".join(stopped.stderr.split())
    assert "the state after epoch 2 is saved in" in message
    words = shlex.split(message.split("resume with: ", 1)[1])
    assert words[:2] == ["dfx", "train-base"] and words[-1] == "--resume"
    resumed = run_child(words[1:])
    assert resumed.returncode == 0, resumed.stderr
    assert_same_weights(straight_run / "real.pt", tmp_path / "real.pt")


def fusion_args(trained, out: Path, *extra, epochs: int = 4) -> list:
    return [
        "train-fusion", "-m", trained["manifest"],
        "--base-dir", trained["base"]["dm"].path.parent, "--out", out, "--epochs", epochs,
        "--lr", "0.001", "--lr-step", "3", "--device", "cpu", "--workers", "0", *extra,
    ]  # fmt: skip


def test_ctrl_c_saves_state_and_prints_the_command_that_resumes(trained, tmp_path, monkeypatch):
    straight = invoke(*fusion_args(trained, tmp_path / "straight.pt"))
    assert straight.exit_code == 0, straight.output

    original_iter = TensorBatches.__iter__

    def interrupted_iter(self):
        if self.shuffle and self.epoch == 3:
            raise KeyboardInterrupt
        return original_iter(self)

    monkeypatch.setattr(TensorBatches, "__iter__", interrupted_iter)
    interrupted = invoke(*fusion_args(trained, tmp_path / "cut.pt", "--seed", "0"))
    assert interrupted.exit_code == 130, interrupted.output
    message = " ".join(interrupted.stderr.split())
    assert "the state after epoch 2 is saved in" in message
    command = message.split("resume with: ", 1)[1]
    words = shlex.split(command)
    assert words[:2] == ["dfx", "train-fusion"] and words[-1] == "--resume"
    assert not (tmp_path / "cut.pt").exists()

    monkeypatch.setattr(TensorBatches, "__iter__", original_iter)
    resumed = invoke(*words[1:])  # exactly the printed command
    assert resumed.exit_code == 0, resumed.output
    assert_same_weights(tmp_path / "straight.pt", tmp_path / "cut.pt")


def test_resume_refuses_other_settings_and_missing_state(trained, tmp_path):
    out = tmp_path / "m.pt"
    first = invoke(*fusion_args(trained, out))
    assert first.exit_code == 0, first.output
    other = invoke(*fusion_args(trained, out, "--resume", "--weight-decay", "0.5"))
    assert_user_error(other, "cannot resume from", "weight_decay 0.001 then, 0.5 now")
    # More epochs than before: allowed, it continues after the last completed one.
    longer = invoke(*fusion_args(trained, out, "--resume", epochs=6))
    assert longer.exit_code == 0, longer.output
    assert len((tmp_path / "m.history.jsonl").read_text().splitlines()) == 6
    absent = invoke(*fusion_args(trained, tmp_path / "new.pt", "--resume"))
    assert_user_error(absent, "no saved training state", "start afresh")


def test_interrupt_in_the_first_epoch_says_nothing_to_resume(trained, tmp_path, monkeypatch):
    def interrupted_iter(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(TensorBatches, "__iter__", interrupted_iter)
    result = invoke(*fusion_args(trained, tmp_path / "m.pt"))
    assert result.exit_code == 130
    assert "nothing to resume" in result.stderr


def test_library_raises_training_interrupted(trained, tmp_path, monkeypatch):
    from dfx.data.manifest import read_manifest
    from dfx.engine.configs import FusionTrainConfig
    from dfx.engine.fusion_training import train_fusion

    calls = []
    original_iter = TensorBatches.__iter__

    def interrupted_iter(self):
        calls.append(self.epoch)
        if self.shuffle and self.epoch == 2:
            raise KeyboardInterrupt
        return original_iter(self)

    monkeypatch.setattr(TensorBatches, "__iter__", interrupted_iter)
    config = FusionTrainConfig(epochs=3, device="cpu", workers=0)
    paths = {name: trained["base"][name].path for name in CLASSES}
    with pytest.raises(TrainingInterrupted) as caught:
        train_fusion(read_manifest(trained["manifest"]), paths, config, out=tmp_path / "m.pt")
    assert caught.value.epoch == 1
    assert caught.value.state_path == tmp_path / "m.state.pt"


def test_target_all_resumes_each_model_where_it_stopped(small_manifest, tmp_path, monkeypatch):
    from dfx.data.shuffle import EpochShuffleSampler

    def train(out: Path, *extra):
        return invoke(
            "train-base", "-m", small_manifest, "--target", "all", "--backbone", "tiny",
            "--weights", "none", "--image-size", "32", "--epochs", "2", "--batch-size", "8",
            "--device", "cpu", "--workers", "0", "--out", out, *extra,
        )  # fmt: skip

    assert train(tmp_path / "straight").exit_code == 0
    original_iter = EpochShuffleSampler.__iter__
    passes = []

    def interrupted_iter(self):
        passes.append(self.epoch)
        if len(passes) == 4:  # dm: epochs 1 and 2; gan: epoch 1, then Ctrl-C in epoch 2
            raise KeyboardInterrupt
        return original_iter(self)

    monkeypatch.setattr(EpochShuffleSampler, "__iter__", interrupted_iter)
    cut = train(tmp_path / "cut")
    assert cut.exit_code == 130, cut.output
    assert "train gan base model: the state after epoch 1" in " ".join(cut.stderr.split())
    assert not (tmp_path / "cut" / "real.state.pt").exists()
    monkeypatch.setattr(EpochShuffleSampler, "__iter__", original_iter)
    resumed = train(tmp_path / "cut", "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "real base model: no saved state, so it starts from epoch 1" in resumed.stderr
    for name in CLASSES:
        assert_same_weights(tmp_path / "straight" / f"{name}.pt", tmp_path / "cut" / f"{name}.pt")

    # Ctrl-C in the first epoch of gan, after dm finished: dm's state makes it resumable.
    passes.clear()

    def early_iter(self):
        passes.append(self.epoch)
        if len(passes) == 3:  # dm: epochs 1 and 2; gan: Ctrl-C in epoch 1
            raise KeyboardInterrupt
        return original_iter(self)

    monkeypatch.setattr(EpochShuffleSampler, "__iter__", early_iter)
    early = train(tmp_path / "early")
    assert early.exit_code == 130, early.output
    message = " ".join(early.stderr.split())
    assert "finished work is saved in" in message and "nothing to resume" not in message
    words = shlex.split(message.split("resume with: ", 1)[1])
    monkeypatch.setattr(EpochShuffleSampler, "__iter__", original_iter)
    assert invoke(*words[1:]).exit_code == 0
    for name in CLASSES:
        assert_same_weights(tmp_path / "straight" / f"{name}.pt", tmp_path / "early" / f"{name}.pt")


def test_train_baseline_resumes_through_fit(small_manifest, tmp_path, monkeypatch):
    from dfx.data import shuffle

    def baseline_args(out: Path, *extra) -> list:
        return [
            "train-baseline", "-m", small_manifest, "--backbone", "tiny", "--weights", "none",
            "--image-size", "32", "--epochs", "3", "--batch-size", "8", "--lr", "0.003",
            "--device", "cpu", "--workers", "0", "--out", out, *extra,
        ]  # fmt: skip

    straight = invoke(*baseline_args(tmp_path / "straight.pt"))
    assert straight.exit_code == 0, straight.output

    original_iter = shuffle.EpochShuffleSampler.__iter__

    def interrupted_iter(self):
        if self.epoch == 2:
            raise KeyboardInterrupt
        return original_iter(self)

    monkeypatch.setattr(shuffle.EpochShuffleSampler, "__iter__", interrupted_iter)
    interrupted = invoke(*baseline_args(tmp_path / "cut.pt"))
    assert interrupted.exit_code == 130, interrupted.output
    words = shlex.split(" ".join(interrupted.stderr.split()).split("resume with: ", 1)[1])
    assert words[:2] == ["dfx", "train-baseline"] and words[-1] == "--resume"

    monkeypatch.setattr(shuffle.EpochShuffleSampler, "__iter__", original_iter)
    resumed = invoke(*words[1:])
    assert resumed.exit_code == 0, resumed.output
    assert_same_weights(tmp_path / "straight.pt", tmp_path / "cut.pt")


# --- train-base refuses to resume changed settings or images ---


def test_train_base_resume_refuses_changed_settings_or_images(little_data, tmp_path):
    out = tmp_path / "base"
    args = ["train-base", "-m", little_data, "--target", "gan", *TINY_RUN, "--out", out]
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    other_lr = invoke("--quiet", *args, "--resume", "--lr", "0.5")
    assert_user_error(other_lr, "cannot resume from", "lr 0.0001 then, 0.5 now")
    fewer = little_data.parent / "fewer.csv"
    lines = little_data.read_text().splitlines()
    # One gan image of the base role: a positive of the gan model, so its training set changes.
    dropped = next(i for i, line in enumerate(lines) if line.split(",")[1:4:2] == ["gan", "base"])
    kept = lines[:dropped] + lines[dropped + 1 :]
    fewer.write_text("\n".join(kept) + "\n")
    other_rows = invoke("--quiet", *[fewer if a == little_data else a for a in args], "--resume")
    assert_user_error(other_rows, "cannot resume from", "rows")
