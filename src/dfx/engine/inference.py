"""Run a network over a data set in eval mode and gather its outputs in data-set order."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from dfx import distributed
from dfx.data.dataset import Failure, unpack
from dfx.engine.device import Placement
from dfx.progress import ProgressReporter, or_null


@dataclass
class Outputs:
    """A network's outputs for every readable input of a data set."""

    values: torch.Tensor
    """Outputs of the readable inputs, float32 on CPU, in data-set order."""
    indices: torch.Tensor
    """Data-set positions of the rows of ``values`` (ascending)."""
    targets: torch.Tensor
    """The data set's targets for those rows."""
    failures: list[Failure]
    """Inputs that could not be read."""


def iter_network(
    network: nn.Module,
    loader: Iterable,
    placement: Placement,
    *,
    progress: ProgressReporter | None = None,
    description: str = "inference",
) -> Iterator[Outputs]:
    """Forward each batch in eval mode and yield its :class:`Outputs` as soon as it is done.

    Inference mode is entered per batch, not across yields, so that it never leaks into the
    caller's code between batches.
    """
    progress = or_null(progress)
    network.eval()
    progress.start("inference", _share_size(loader), description)
    for batch in loader:
        inputs, batch_targets, batch_failures = unpack(batch)
        values = torch.empty(0)
        if len(batch_targets):
            with torch.inference_mode(), placement.autocast():
                values = network(placement.to_device(inputs)).float().cpu()
        indices = batch.indices if len(batch_targets) else torch.empty(0, dtype=torch.long)
        progress.advance("inference", len(batch_targets) + len(batch_failures))
        yield Outputs(values, indices, batch_targets, batch_failures)
    progress.finish("inference")


def run_network(
    network: nn.Module,
    loader: Iterable,
    placement: Placement,
    *,
    progress: ProgressReporter | None = None,
    description: str = "inference",
) -> Outputs:
    """Forward every batch under ``torch.inference_mode()``; unreadable inputs are skipped.

    In a data-parallel run each process forwards its share of the data set and every
    process receives all the outputs, each input exactly once, in data-set order.
    """
    values, indices, targets, failures = [], [], [], []
    for part in iter_network(
        network, loader, placement, progress=progress, description=description
    ):
        failures.extend(part.failures)
        if len(part.indices):
            values.append(part.values)
            indices.append(part.indices)
            targets.append(part.targets)
    if distributed.world_size() > 1:
        return _gather(values, indices, targets, failures)
    if not values:
        empty = torch.empty(0, dtype=torch.long)
        return Outputs(torch.empty(0), empty, empty, failures)
    order_indices = torch.cat(indices)
    order = torch.argsort(order_indices)
    return Outputs(
        torch.cat(values)[order], order_indices[order], torch.cat(targets)[order], failures
    )


def _share_size(loader) -> int:
    """Inputs this process will see: its sampler's share, or the whole data set."""
    sampler = getattr(loader, "sampler", None)
    return len(sampler) if sampler is not None else len(loader.dataset)


def _gather(values: list, indices: list, targets: list, failures: list) -> Outputs:
    """Every process's outputs in data-set order, received in pieces of bounded size.

    One gather first brings every process's positions, targets and failures (a few bytes
    per input) and its piece count; each piece of values is then written straight to its
    place, so no second full copy is made.
    """
    empty = torch.empty(0, dtype=torch.long)
    local_indices = torch.cat(indices) if indices else empty
    local_values = torch.cat(values) if values else None
    values.clear()
    rows = len(local_indices)
    row_bytes = local_values[:1].numel() * local_values.element_size() if rows else 0
    own_pieces = -(-rows * row_bytes // distributed.GATHER_CHUNK_BYTES)
    header = (local_indices, torch.cat(targets) if targets else empty, failures, own_pieces)
    shares = distributed.gather_objects(header)
    all_indices, order = torch.sort(torch.cat([share[0] for share in shares]))
    all_targets = torch.cat([share[1] for share in shares])[order]
    all_failures = sorted((f for share in shares for f in share[2]), key=lambda f: f.index)

    pieces = max(share[3] for share in shares)
    steps = [-(-len(share[0]) // pieces) if pieces else 0 for share in shares]
    step = steps[distributed.rank()]
    gathered = None
    for piece in range(pieces):
        part = None
        if local_values is not None and piece * step < rows:
            # clone: a pickled view would carry its whole underlying storage along
            part = local_values[piece * step : (piece + 1) * step].clone()
        for (positions, *_), size, received in zip(shares, steps, distributed.gather_objects(part)):
            if received is None:
                continue
            if gathered is None:
                gathered = received.new_empty((len(all_indices), *received.shape[1:]))
            where = positions[piece * size : (piece + 1) * size]
            gathered[torch.searchsorted(all_indices, where)] = received
    if gathered is None:
        gathered = torch.empty(0)
    return Outputs(gathered, all_indices, all_targets, all_failures)
