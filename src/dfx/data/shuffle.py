"""Samplers whose orders are a function of (seed, epoch) alone, split among processes.

A resumed run sees the same orders as an uninterrupted one. In a data-parallel training
run each process takes every ``world``-th position of the order (see :func:`shard`), so
the processes' batches together are exactly the single-process batch of the same step.
Evaluation shards whole batches instead (:class:`ShardSampler`), so that every process
runs exactly the batches a single process would.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DistributedSampler, Sampler


def shuffle_order(count: int, seed: int, epoch: int) -> torch.Tensor:
    """A permutation of ``range(count)`` drawn from (seed, epoch) only."""
    # SeedSequence mixes the pair well, so neighbouring epochs give unrelated orders.
    state = np.random.SeedSequence([seed % 2**63, epoch]).generate_state(2, np.uint64)
    generator = torch.Generator().manual_seed(int(state[0] % 2**63))
    return torch.randperm(count, generator=generator)


def shard(order: torch.Tensor, rank: int, world: int, *, pad: bool) -> torch.Tensor:
    """Positions ``rank``, ``rank + world``, ... of ``order``.

    ``pad=True`` (training) first repeats the start of ``order`` until its length divides
    by ``world``, so every process takes the same number of steps, as DistributedDataParallel
    needs. ``pad=False`` (evaluation) leaves the shares unequal by at most one, so that no
    sample is counted twice.
    """
    if world == 1:
        return order
    if pad and len(order):
        total = -(-len(order) // world) * world
        order = order.repeat(-(-total // len(order)))[:total]
    return order[rank::world]


def shard_length(count: int, rank: int, world: int, *, pad: bool) -> int:
    """The length of :func:`shard` of ``count`` positions."""
    if pad:
        return -(-count // world) if count else 0
    return len(range(rank, count, world))


class EpochShuffleSampler(DistributedSampler):
    """Visit a data set in a new order each epoch, the order fixed by (seed, epoch).

    A :class:`~torch.utils.data.DistributedSampler`: with ``num_replicas`` > 1 this
    process visits its padded share of the epoch's order. The training loop calls
    :meth:`set_epoch` before each epoch; without it, each pass counts as the next epoch.
    """

    def __init__(self, size: int, seed: int = 0, *, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(range(size), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.size = size
        self.epoch = 1

    def __len__(self) -> int:
        return shard_length(self.size, self.rank, self.num_replicas, pad=True)

    def __iter__(self):
        order = shuffle_order(self.size, self.seed, self.epoch)
        self.epoch += 1
        return iter(shard(order, self.rank, self.num_replicas, pad=True).tolist())


class ShardSampler(Sampler[int]):
    """This process's share of a data set in order, for evaluation: no padding, no repeats.

    The data set is cut into the batches of ``batch_size`` a single process would run, and
    process ``rank`` takes batches ``rank``, ``rank + world``, ... whole. A network's float
    results can depend on which inputs share a batch (oneDNN picks its kernels by batch
    shape), so running the single process's batches is what makes a data-parallel
    evaluation equal one process's byte for byte. A DataLoader with the same ``batch_size``
    regroups the positions into exactly those batches: only the data set's last batch can
    be short, and it comes last in its process's share.
    """

    def __init__(self, size: int, rank: int, world: int, batch_size: int = 1) -> None:
        self.size, self.rank, self.world, self.batch_size = size, rank, world, batch_size

    def __len__(self) -> int:
        return sum(len(batch) for batch in self._batches())

    def __iter__(self):
        return (position for batch in self._batches() for position in batch)

    def _batches(self):
        starts = range(self.rank * self.batch_size, self.size, self.world * self.batch_size)
        return (range(start, min(start + self.batch_size, self.size)) for start in starts)
