"""Data-parallel runs under torchrun: one process per device, rank 0 alone writes and prints.

torchrun (and SLURM through it) tells each process its place in environment variables:
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``/``PORT``.

Data-parallel behaviour is opt-in: :func:`activate` turns it on (the data-parallel
commands call it under torchrun; a Python program calls it before using dfx). Only then
does :func:`setup` join the process group when the device is chosen, do loaders shard,
results gather and other ranks than 0 skip writing. A program that runs under torchrun
for its own reasons and calls dfx on one rank gets ordinary single-process behaviour.
A process group dfx created is left at a normal exit, after every process has arrived.
Nothing at module level imports torch, so the command line can ask "am I rank 0?"
without slowing ``--help``.
"""

from __future__ import annotations

import atexit
import os
import sys

from dfx.errors import DfxError

GATHER_CHUNK_BYTES = 128 * 2**20
"""Largest piece of a rank's outputs sent in one gather (features can reach gigabytes)."""


_active = False
_leave_at_exit = False


def activate(*, leave_at_exit: bool = True) -> None:
    """Make dfx run data-parallel when several processes were launched (see module doc).

    With ``leave_at_exit``, a process group dfx creates is left when the program ends
    normally, once every process has ended (see :func:`finish`); the command line passes
    False because it leaves the group itself and must not wait on a failure.
    """
    global _active, _leave_at_exit
    _active = True
    _leave_at_exit = leave_at_exit


def is_active() -> bool:
    """True when dfx runs data-parallel: activated, with several processes launched."""
    return _active and is_launched()


def launched_processes() -> int:
    """How many processes the launcher started for this job (1 outside torchrun)."""
    return _env_int("WORLD_SIZE", 1)


def launched_rank() -> int:
    """The rank the launcher gave this process (0 outside torchrun), active or not."""
    return _env_int("RANK", 0) if is_launched() else 0


def is_launched() -> bool:
    """True when torchrun (or an equivalent launcher) started several processes."""
    return launched_processes() > 1


def _torch_distributed():
    """``torch.distributed`` when dfx runs data-parallel in an initialised group, else None."""
    if not _active:
        return None
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist
    return None


def _peers():
    """``torch.distributed`` when other processes share the work, else None."""
    dist = _torch_distributed()
    return dist if dist is not None and dist.get_world_size() > 1 else None


def rank() -> int:
    """This process's rank: 0 for the only process of an ordinary run."""
    dist = _torch_distributed()
    if dist is not None:
        return dist.get_rank()
    return launched_rank() if is_active() else 0


def world_size() -> int:
    """Processes sharing the work (1 until :func:`setup` has joined a process group)."""
    dist = _torch_distributed()
    return dist.get_world_size() if dist is not None else 1


def is_main() -> bool:
    """True in the process that writes files and prints: rank 0."""
    return rank() == 0


def local_processes() -> int:
    """Processes of this job on this machine (they share its CPUs)."""
    return max(1, _env_int("LOCAL_WORLD_SIZE", 1))


def setup(device):
    """Join the launcher's process group for ``device`` and return this process's device.

    Outside an active data-parallel run this does nothing and returns ``device``. In one,
    CUDA runs use the NCCL backend and one GPU per process (``cuda:LOCAL_RANK``); CPU runs
    use gloo.
    A process group the caller initialised already is used as it is.
    """
    if not is_active():
        return device
    import torch
    import torch.distributed as dist

    if device.type == "cuda":
        device = _local_gpu(device)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise DfxError(f"data-parallel runs use CUDA or the CPU, not {device.type}.")
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
        if _leave_at_exit:
            atexit.register(_finish_at_exit)
    return device


def _local_gpu(requested):
    import torch

    if requested.index is not None:
        raise DfxError(
            f"`device` {requested}: under torchrun each process uses the GPU of its local "
            "rank; pass `device` cuda (or auto) and choose GPUs with CUDA_VISIBLE_DEVICES."
        )
    local_rank, count = _env_int("LOCAL_RANK", 0), torch.cuda.device_count()
    if local_rank >= count:
        raise DfxError(
            f"torchrun started {local_processes()} processes on this machine but it has "
            f"{count} visible GPU(s); run at most {count} per machine."
        )
    return torch.device("cuda", local_rank)


def finish() -> None:
    """Leave the process group once every process has finished its work.

    Call it only where every process arrives (a command that ended normally): a process
    that leaves while another is still sending makes gloo abort, and one that waits for a
    process that failed would wait until the backend's timeout.
    """
    dist = _torch_distributed()
    if dist is not None:
        dist.barrier()
        dist.destroy_process_group()


def end_process(code: int = 0) -> None:
    """End this process of a data-parallel run now, with ``code``, once it has left its group.

    Skips the interpreter's teardown: a gloo thread that drops its last reference to a
    tensor while Python shuts down is unwound by the shutdown and aborts the process
    ("terminate called without an active exception", SIGABRT), rarely but after the work
    succeeded, which fails the whole job. Every file is written by then; the standard
    streams are flushed here.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or vanished reader: nothing more to say
            pass
    os._exit(code)


def _finish_at_exit() -> None:
    """Leave the group when the program ends, unless it ends on an unhandled exception.

    A program that ends without leaving lets gloo abort on a message still in flight
    (SIGABRT, a failed job); a process ending on an error must not wait for the others,
    which may never arrive.
    """
    if getattr(sys, "last_value", None) is None:  # set when an exception reached the top
        finish()


def per_process_batch_size(global_batch_size: int) -> int:
    """This process's share of a training batch: ``--batch-size`` is the global batch.

    Keeping the global batch fixed keeps the paper's optimisation settings whatever the
    number of processes; it must therefore divide evenly among them.
    """
    processes = world_size()
    if global_batch_size % processes:
        lower = global_batch_size - global_batch_size % processes
        nearest = " or ".join(str(n) for n in (lower, lower + processes) if n > 0)
        raise DfxError(
            f"`batch_size` {global_batch_size} is the global batch and must divide evenly "
            f"among the {processes} processes; use a multiple of {processes}, such as "
            f"{nearest}."
        )
    return max(1, global_batch_size // processes)


def sum_across(values: list[float]) -> list[float]:
    """Element-wise sums of ``values`` over all processes (``values`` itself in one process)."""
    dist = _peers()
    if dist is None:
        return list(values)
    import torch

    tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(tensor)
    return tensor.tolist()


def gather_objects(item) -> list:
    """Every process's ``item``, in rank order (``[item]`` in one process).

    The items are pickled between the processes of this job only; nothing from a file is
    unpickled.
    """
    dist = _peers()
    if dist is None:
        return [item]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, item)
    return gathered


def broadcast_buffers(module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) into every process's ``module``."""
    dist = _peers()
    if dist is None:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)


def wrap_for_training(network, device):
    """``network`` in DistributedDataParallel when several processes train it, else itself.

    DDP broadcasts rank 0's weights and buffers on wrapping, so every process starts equal,
    and averages gradients over the processes on each backward pass.
    """
    if world_size() == 1:
        return network
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        network, device_ids=[device.index] if device.type == "cuda" else None
    )


def _collective_device():
    import torch

    dist = _torch_distributed()
    if dist is not None and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


LAUNCHER_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


def check_launcher_variables() -> None:
    """Fail with one sentence when a launcher variable is set but is not a whole number."""
    for name in LAUNCHER_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value and _as_int(value) is None:
            raise DfxError(f"the environment variable {name}={value!r} is not a whole number.")


def _env_int(name: str, default: int) -> int:
    value = _as_int(os.environ.get(name, "").strip())
    return default if value is None else value


def _as_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None
