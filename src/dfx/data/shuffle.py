"""Shuffle orders that are a function of (seed, epoch) alone, so a resumed run sees the same."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Sampler


def shuffle_order(count: int, seed: int, epoch: int) -> torch.Tensor:
    """A permutation of ``range(count)`` drawn from (seed, epoch) only."""
    # SeedSequence mixes the pair well, so neighbouring epochs give unrelated orders.
    state = np.random.SeedSequence([seed % 2**63, epoch]).generate_state(2, np.uint64)
    generator = torch.Generator().manual_seed(int(state[0] % 2**63))
    return torch.randperm(count, generator=generator)


class EpochShuffleSampler(Sampler[int]):
    """Visit a data set in a new order each epoch, the order fixed by (seed, epoch).

    The training loop calls :meth:`set_epoch` before each epoch; without it, each pass
    counts as the next epoch.
    """

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size = size
        self.seed = seed
        self.epoch = 1

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` on the next pass."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        order = shuffle_order(self.size, self.seed, self.epoch)
        self.epoch += 1
        return iter(order.tolist())
