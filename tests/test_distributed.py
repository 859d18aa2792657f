"""Data-parallel runs: exact shards, rank-0-only output, and torchrun with two CPU processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dfx import distributed, synthetic
from dfx.atomic import atomic_write
from dfx.data.manifest import read_manifest
from dfx.data.shuffle import EpochShuffleSampler, ShardSampler, shuffle_order
from dfx.engine.batches import TensorBatches
from dfx.errors import DfxError
from tests.compare import assert_same_up_to_rounding, without_decimals
from tests.helpers import assert_user_error, invoke

TINY = ["--backbone", "tiny", "--weights", "none", "--image-size", "32"]
CPU = ["--device", "cpu", "--workers", "0"]


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("size", [0, 1, 7, 10, 43])
def test_evaluation_shards_hold_every_position_exactly_once(size, world):
    shares = [list(ShardSampler(size, rank, world)) for rank in range(world)]
    assert sorted(i for share in shares for i in share) == list(range(size))
    assert [len(ShardSampler(size, rank, world)) for rank in range(world)] == [
        len(share) for share in shares
    ]


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("size", [0, 1, 7, 8, 43])
def test_evaluation_shards_run_the_single_process_batches_whole(size, world):
    """Exactness on every CPU: each process runs some of one process's batches, unchanged."""
    dataset = list(range(size))
    single = [batch.tolist() for batch in torch.utils.data.DataLoader(dataset, batch_size=4)]
    runs = []
    for rank in range(world):
        sampler = ShardSampler(size, rank, world, batch_size=4)
        loader = torch.utils.data.DataLoader(dataset, batch_size=4, sampler=sampler)
        runs.append([batch.tolist() for batch in loader])
        assert len(sampler) == sum(len(batch) for batch in runs[-1])
    assert [batch for rank in range(world) for batch in runs[rank]] == [
        batch for rank in range(world) for batch in single[rank::world]
    ]


@pytest.mark.parametrize("size", [1, 11, 12, 45])
@pytest.mark.parametrize("world", [2, 3])
def test_training_shards_make_up_the_single_process_batches(size, world):
    global_batch = 2 * world
    local_batch = global_batch // world
    single = shuffle_order(size, seed=5, epoch=3).tolist()
    samplers = [
        EpochShuffleSampler(size, 5, num_replicas=world, rank=rank) for rank in range(world)
    ]
    for sampler in samplers:
        sampler.set_epoch(3)
    shares = [list(sampler) for sampler in samplers]
    # Equal step counts on every process: DistributedDataParallel would hang otherwise.
    assert len({len(share) for share in shares}) == 1
    assert all(len(share) == len(sampler) for share, sampler in zip(shares, samplers))
    # Each step's process batches together are the single-process batch of that step,
    # padded at the end with repeats from the start of the order.
    padded = (single * world)[: len(shares[0]) * world]
    for step in range(0, len(shares[0]), local_batch):
        together = sorted(i for share in shares for i in share[step : step + local_batch])
        assert together == sorted(padded[step * world : (step + local_batch) * world])
    assert set(padded) == set(range(size))


def test_one_process_shuffle_is_unchanged_by_the_sharding():
    sampler = EpochShuffleSampler(20, seed=1)
    sampler.set_epoch(4)
    assert list(sampler) == shuffle_order(20, 1, 4).tolist()


def test_tensor_batches_shard_like_the_samplers(monkeypatch):
    inputs = torch.arange(9.0).unsqueeze(1)
    targets = torch.arange(9)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    seen = []
    for rank in (0, 1):
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        batches = TensorBatches(inputs, targets, 2)
        seen += [int(t) for _, batch_targets in batches for t in batch_targets]
        assert len(batches) == len(list(batches))
    assert sorted(seen) == list(range(9))


def test_the_global_batch_must_divide_among_the_processes(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    assert distributed.per_process_batch_size(48) == 16
    with pytest.raises(DfxError, match="multiple of 3, such as 30 or 33"):
        distributed.per_process_batch_size(32)
    with pytest.raises(DfxError, match=r"such as 3\.$"):
        distributed.per_process_batch_size(2)


def test_outside_an_activated_run_torchrun_variables_change_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert distributed.is_launched() and not distributed.is_active()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    with atomic_write(tmp_path / "out.json") as handle:
        handle.write("{}")
    assert (tmp_path / "out.json").read_text() == "{}"


def test_only_rank_0_writes_files(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(distributed, "_active", True)
    assert not distributed.is_main()
    with atomic_write(tmp_path / "sub" / "out.json") as handle:
        handle.write("{}")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv("RANK", "0")
    with atomic_write(tmp_path / "sub" / "out.json") as handle:
        handle.write("{}")
    assert (tmp_path / "sub" / "out.json").read_text() == "{}"


@pytest.mark.parametrize("command", ["predict", "split", "demo", "backbones", "import-official"])
def test_commands_that_are_not_data_parallel_refuse_torchrun(command):
    result = invoke(command, env={"WORLD_SIZE": "2", "RANK": "0", "LOCAL_WORLD_SIZE": "2"})
    assert_user_error(result, "does not run data-parallel", "without torchrun")


def test_a_bad_launcher_variable_is_one_sentence():
    result = invoke("backbones", env={"WORLD_SIZE": "two"})
    assert_user_error(result, "WORLD_SIZE", "not a whole number")


def test_a_finished_process_ends_with_its_output_but_without_the_teardown():
    """end_process flushes what was printed, keeps the exit code and runs no exit hooks."""
    program = (
        "import atexit, sys\n"
        "from dfx import distributed\n"
        "atexit.register(lambda: print('teardown ran'))\n"
        "print('result line')\n"
        "print('a notice', file=sys.stderr)\n"
        "distributed.end_process(3)\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60
    )
    assert (child.returncode, child.stdout, child.stderr) == (3, "result line\n", "a notice\n")


# --- the training loop in two gloo processes ----------------------------------------------

FEATURES = torch.linspace(-1, 1, 16).reshape(4, 4)
LABELS = torch.tensor([0, 2, 1, 2])
CLASS_WEIGHTS = torch.tensor([1.0, 2.0, 0.5])
EMPTY = (torch.empty(0, 4), torch.empty(0, dtype=torch.long))


def fit_tiny(model, batches, validation) -> list:
    """Two epochs of ``fit``; the history without wall times."""
    from dfx.engine.device import Placement
    from dfx.engine.loop import fit

    result = fit(
        model,
        batches,
        validation,
        epochs=2,
        optimizer=torch.optim.Adam(model.parameters(), lr=0.1),
        scheduler=None,
        loss_fn=torch.nn.CrossEntropyLoss(weight=CLASS_WEIGHTS),
        placement=Placement(torch.device("cpu"), None),
    )
    return [(r.train_loss, r.train_accuracy, r.val_loss, r.val_accuracy) for r in result.history]


def linear_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(4, 3)


def batch_norm_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))


# Single process: batches [0, 1] and [3, 2]. Two processes: rank 1's first batch is all
# unreadable before it has any image to stand in, and its second is image 2.
SHARES = {0: [[0, 1], [3]], 1: [[], [2]]}


def fit_worker(rank: int, init_file: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    distributed.activate()
    batches = [(FEATURES[s], LABELS[s]) if s else EMPTY for s in SHARES[rank]]
    validation = [(FEATURES[rank::2], LABELS[rank::2])]
    model = linear_model()
    history = fit_tiny(model, batches, validation)
    normalised = batch_norm_model()
    fit_tiny(normalised, [(FEATURES[rank::2], LABELS[rank::2])], None)
    torch.save({"linear": model.state_dict(), "history": torch.tensor(history),
                "batch_norm": normalised.state_dict()}, f"{out}/{rank}.pt")  # fmt: skip
    distributed.finish()
    distributed.end_process(0)


def test_two_processes_step_like_one_even_when_a_batch_is_unreadable(tmp_path):
    """Each step's gradient, and the reported losses, are the single-process ones."""
    torch.multiprocessing.spawn(
        fit_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True
    )
    ranks = [torch.load(tmp_path / f"{rank}.pt", weights_only=True) for rank in (0, 1)]
    single = linear_model()
    batches = [(FEATURES[[0, 1]], LABELS[[0, 1]]), (FEATURES[[3, 2]], LABELS[[3, 2]])]
    # The validation loss does not depend on how the set is cut into batches.
    validation = [(FEATURES[:1], LABELS[:1]), (FEATURES[1:], LABELS[1:])]
    history = fit_tiny(single, batches, validation)
    for key, value in single.state_dict().items():
        assert torch.allclose(ranks[0]["linear"][key], value, atol=1e-6), key
        assert torch.equal(ranks[0]["linear"][key], ranks[1]["linear"][key])
    assert torch.allclose(ranks[0]["history"], torch.tensor(history))
    # Every process ends with rank 0's BatchNorm statistics, the ones rank 0 saves.
    for key, value in ranks[0]["batch_norm"].items():
        assert torch.equal(value, ranks[1]["batch_norm"][key]), key


def shares_of(rank: int, world: int, count: int, empty_rank: int | None) -> list[int]:
    """Evaluation positions of ``rank``; ``empty_rank`` read nothing at all."""
    return [] if rank == empty_rank else list(range(rank, count, world))


def gather_worker(rank: int, init_file: str) -> None:
    import torch.distributed as dist

    from dfx.data.dataset import Failure
    from dfx.engine import inference

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    distributed.activate()
    distributed.GATHER_CHUNK_BYTES = 40  # three rows of three floats: several pieces
    for empty_rank in (None, 1):
        mine = shares_of(rank, 2, 23, empty_rank)
        readable = torch.tensor([i for i in mine if i % 5], dtype=torch.long)
        batches = readable.split(3)
        outputs = inference._gather(
            [torch.stack([b.float(), -b.float(), b.float() ** 2], 1) for b in batches],
            list(batches),
            [b * 10 for b in batches],
            [Failure(i, "unreadable", f"{i}.png") for i in mine if i % 5 == 0],
        )
        every = [i for r in (0, 1) for i in shares_of(r, 2, 23, empty_rank)]
        expected = torch.tensor(sorted(i for i in every if i % 5))
        assert torch.equal(outputs.indices, expected)
        assert torch.equal(outputs.targets, expected * 10)
        values = torch.stack([expected.float(), -expected.float(), expected.float() ** 2], 1)
        assert torch.equal(outputs.values, values)
        assert [f.index for f in outputs.failures] == sorted(i for i in every if i % 5 == 0)
    distributed.finish()
    distributed.end_process(0)


def test_outputs_gathered_in_pieces_land_in_data_set_order(tmp_path):
    """Uneven shares, a process with nothing, failures: every input once, in order."""
    torch.multiprocessing.spawn(gather_worker, args=(str(tmp_path / "init"),), nprocs=2)


def test_data_loader_workers_share_the_machine(monkeypatch):
    from dfx.engine import device

    monkeypatch.setattr(device.os, "cpu_count", lambda: 192)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    monkeypatch.setattr(device, "usable_cpus", lambda: 96)  # a SLURM task's CPUs, shared
    assert device.default_workers() == 11
    monkeypatch.setattr(device, "usable_cpus", lambda: 24)  # bound to its own share
    assert device.default_workers() == 16


def test_error_sentences_keep_square_brackets(capsys):
    from dfx.cli.errors import fail

    fail("resume with: torchrun [same options] -m dfx train-base --resume")
    assert "torchrun [same options] -m dfx" in capsys.readouterr().err


# --- torchrun with two CPU processes (gloo) ----------------------------------------------


def torchrun(*args, processes: int = 2) -> subprocess.CompletedProcess:
    """Run the installed ``dfx ARGS`` under torchrun (or plainly with ``processes=1``)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    launcher += ["--nproc-per-node", str(processes), "-m", "dfx"]
    command = launcher if processes > 1 else [sys.executable, "-m", "dfx"]
    env = os.environ | {"OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.run(
        [*command, *map(str, args)], env=env, capture_output=True, text=True, timeout=300
    )


def succeeded(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


@pytest.fixture(scope="module")
def odd_folder(tmp_path_factory) -> Path:
    """A labelled folder of 6 × 7 images plus one truncated file: 43 inputs, an odd count."""
    root = tmp_path_factory.mktemp("odd") / "data"
    synthetic.write_dataset(root, per_generator=7, image_size=32, seed=3)
    first = next((root / "gan").rglob("*.png"))
    (first.parent / "truncated.png").write_bytes(first.read_bytes()[:200])
    return root


def test_torchrun_trains_base_models_and_fusion_writing_each_file_once(manifest_path, tmp_path):
    base = tmp_path / "base"
    train = ["-m", manifest_path, *CPU, "--epochs", "2", "--batch-size", "16"]
    result = succeeded(torchrun("train-base", *train, *TINY, "--target", "all", "-o", base))
    # Rank 0 alone prints: one table, one "wrote" line per model.
    assert result.stdout.count("Base models on the test images") == 1
    for name in ("dm", "gan", "real"):
        assert result.stderr.count(f"wrote {base / name}.pt") == 1
        assert len((base / f"{name}.history.jsonl").read_text().splitlines()) == 2
    assert not [p for p in base.iterdir() if p.name.startswith(".")]  # no temporary litter

    model = tmp_path / "model.pt"
    result = succeeded(torchrun("train-fusion", *train, "--base-dir", base, "-o", model))
    assert result.stderr.count(f"wrote {model}") == 1
    history = [json.loads(line) for line in model.with_suffix(".history.jsonl").open()]
    assert [record["epoch"] for record in history] == [1, 2]
    counts = torch.load(model, weights_only=True)["metrics"]["counts"]
    # Features of every fusion image were extracted once, over the two processes.
    assert counts["train"] + counts["val"] == len(read_manifest(manifest_path).select("fusion"))


def test_two_process_evaluation_equals_one_process_to_rounding(trained, odd_folder, tmp_path):
    outputs = {}
    for processes in (1, 2):
        out = tmp_path / str(processes)
        result = torchrun(
            "evaluate", "--model", trained["model"], "--data", odd_folder, *CPU,
            "--no-balanced", "--batch-size", "4",
            "-o", out / "report.json", "--plots", out / "plots",
            processes=processes,
        )  # fmt: skip
        assert result.returncode != 0  # the truncated file makes the exit code 1
        assert "error:" not in result.stderr  # dfx's own errors; torchrun reports the exit 1
        outputs[processes] = (
            json.loads((out / "report.json").read_text()),
            # curves.json is left out: a near-tie reordered by rounding can drop a ROC point.
            (out / "plots" / "curves.json").is_file(),
            without_decimals(result.stdout.replace(str(out), "OUT")),
        )
    # Two processes batch the images differently: floats agree to rounding, decisions exactly.
    assert_same_up_to_rounding(outputs[1], outputs[2])
    report = outputs[2][0]
    assert report["n"] == 42  # every readable image once, none twice
    assert [f["path"] for f in report["failures"]] == [str(p) for p in odd_folder.rglob("trunc*")]


def test_two_process_jpeg_robustness_equals_one_process(trained, manifest_path, tmp_path):
    reports = []
    for processes in (1, 2):
        path = tmp_path / f"{processes}.json"
        succeeded(
            torchrun(
                "jpeg-robustness",
                "--model",
                trained["model"],
                "-m",
                manifest_path,
                *CPU,
                "--qf",
                "90",
                "--qf",
                "50",
                "-o",
                path,
                processes=processes,
            )  # fmt: skip
        )
        reports.append(json.loads(path.read_text()))
    assert_same_up_to_rounding(reports[0], reports[1])


def test_resume_under_torchrun_repeats_the_uninterrupted_run(manifest_path, tmp_path):
    train = ["-m", manifest_path, *TINY, *CPU, "--batch-size", "16"]
    succeeded(torchrun("train-baseline", *train, "--epochs", "2", "-o", tmp_path / "whole.pt"))
    split = tmp_path / "split.pt"
    succeeded(torchrun("train-baseline", *train, "--epochs", "1", "-o", split))
    resumed = torchrun("train-baseline", *train, "--epochs", "2", "-o", split, "--resume")
    succeeded(resumed)
    assert "resuming after epoch 1 of 2" in resumed.stderr
    whole = torch.load(tmp_path / "whole.pt", weights_only=True)["state_dict"]
    again = torch.load(split, weights_only=True)["state_dict"]
    assert whole.keys() == again.keys()
    assert all(torch.equal(whole[key], again[key]) for key in whole)


def test_each_process_takes_its_local_gpu_and_no_other(monkeypatch):
    with pytest.raises(DfxError, match="pass `device` cuda"):
        distributed._local_gpu(torch.device("cuda", 1))
    monkeypatch.setenv("LOCAL_RANK", str(torch.cuda.device_count()))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(torch.cuda.device_count() + 1))
    with pytest.raises(DfxError, match=r"run at most \d+ per machine"):
        distributed._local_gpu(torch.device("cuda"))


PREDICT_SCRIPT = """
import json, sys
from dfx import distributed, load_detector

distributed.activate()
detector = load_detector(sys.argv[1], device="cpu")
images = sys.argv[3:]
predictions = [p.to_dict() for p in detector.predict(images, batch_size=2, workers=0)]
if distributed.is_main():
    with open(sys.argv[2], "w") as out:
        json.dump({"predictions": predictions, "world": distributed.world_size()}, out)
"""


def test_the_python_api_predicts_every_image_once_under_torchrun(trained, odd_folder, tmp_path):
    script = tmp_path / "predict.py"
    script.write_text(PREDICT_SCRIPT)
    images = sorted(str(p) for p in odd_folder.rglob("*.png"))[:9]
    results = []
    for processes in (1, 2):
        out = tmp_path / f"{processes}.json"
        launcher = ["--standalone", "--nproc-per-node", str(processes), str(script)]
        result = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", *launcher, trained["model"], out,
             *images],
            env=os.environ | {"OMP_NUM_THREADS": "1"},
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        succeeded(result)
        results.append(json.loads(out.read_text()))
    assert [r["world"] for r in results] == [1, 2]
    assert_same_up_to_rounding(results[0]["predictions"], results[1]["predictions"])
    assert [p["path"] for p in results[1]["predictions"]] == images
    assert all(p["label"] in ("dm", "gan", "real") for p in results[1]["predictions"])


def test_programs_leave_the_group_at_exit_only_when_they_end_normally(monkeypatch):
    from dfx import distributed

    left = []
    monkeypatch.setattr(distributed, "finish", lambda: left.append(True))
    monkeypatch.delattr(distributed.sys, "last_value", raising=False)
    distributed._finish_at_exit()
    assert left == [True]
    monkeypatch.setattr(distributed.sys, "last_value", ValueError("a failing rank"), raising=False)
    distributed._finish_at_exit()
    assert left == [True]  # the others may never arrive: no waiting on them
