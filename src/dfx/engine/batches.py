"""Mini-batches straight from in-memory tensors: no per-sample Dataset indexing or collation."""

from __future__ import annotations

import torch


class TensorBatches:
    """Iterate (inputs, targets) slices of tensors, reshuffled each pass when ``shuffle``."""

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
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return -(-len(self.targets) // self.batch_size)

    def __iter__(self):
        count = len(self.targets)
        if self.shuffle:
            order = torch.randperm(count, generator=self.generator).to(self.inputs.device)
        else:
            order = torch.arange(count, device=self.inputs.device)
        for start in range(0, count, self.batch_size):
            chosen = order[start : start + self.batch_size]
            yield self.inputs[chosen], self.targets[chosen]
