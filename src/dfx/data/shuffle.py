"""Samplers whose orders are a function of (seed, epoch) alone, split among processes.

A resumed run sees the same orders as an uninterrupted one. In a data-parallel run each
process takes every ``world``-th position of the order (see :func:`shard`), so the
processes' batches together are exactly the single-process batch of the same step.
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
    """This process's share of a data set in order, for evaluation: no padding, no repeats."""

    def __init__(self, size: int, rank: int, world: int) -> None:
        self.size, self.rank, self.world = size, rank, world

    def __len__(self) -> int:
        return shard_length(self.size, self.rank, self.world, pad=False)

    def __iter__(self):
        return iter(range(self.rank, self.size, self.world))
