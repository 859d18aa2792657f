"""Mini-batches straight from in-memory tensors: no per-sample Dataset indexing or collation."""

from __future__ import annotations

import torch

from dfx import distributed
from dfx.data.shuffle import shard, shard_length, shuffle_order


class TensorBatches:
    """Iterate (inputs, targets) slices of tensors, reshuffled each pass when ``shuffle``.

    The order of a pass depends only on (seed, epoch); see :meth:`set_epoch`. In a
    data-parallel run each process iterates its share (:func:`dfx.data.shuffle.shard`,
    padded when shuffling for training) and ``batch_size`` is per process.
    """

    def __init__(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
    ) -> None:
        self.inputs = inputs
        self.targets = targets
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 1
        self.rank, self.world = distributed.rank(), distributed.world_size()

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` on the next pass (otherwise each pass is the next epoch)."""
        self.epoch = epoch

    def __len__(self) -> int:
        share = shard_length(len(self.targets), self.rank, self.world, pad=self.shuffle)
        return -(-share // self.batch_size)

    def __iter__(self):
        count = len(self.targets)
        if self.shuffle:
            order = shuffle_order(count, self.seed, self.epoch)
            self.epoch += 1
        else:
            order = torch.arange(count)
        order = shard(order, self.rank, self.world, pad=self.shuffle).to(self.inputs.device)
        for start in range(0, len(order), self.batch_size):
            chosen = order[start : start + self.batch_size]
            yield self.inputs[chosen], self.targets[chosen]
