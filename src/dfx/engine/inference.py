"""Run a network over a data set in eval mode and gather its outputs in data-set order."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from dfx.data.dataset import Failure
from dfx.engine.device import Runtime
from dfx.engine.loop import unpack
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
    runtime: Runtime,
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
    progress.start("inference", len(loader.dataset), description)
    for batch in loader:
        inputs, batch_targets, batch_failures = unpack(batch)
        values = torch.empty(0)
        if len(batch_targets):
            with torch.inference_mode(), runtime.autocast():
                values = network(runtime.to_device(inputs)).float().cpu()
        indices = batch.indices if len(batch_targets) else torch.empty(0, dtype=torch.long)
        progress.advance("inference", len(batch_targets) + len(batch_failures))
        yield Outputs(values, indices, batch_targets, batch_failures)
    progress.finish("inference")


def run_network(
    network: nn.Module,
    loader: Iterable,
    runtime: Runtime,
    *,
    progress: ProgressReporter | None = None,
    description: str = "inference",
) -> Outputs:
    """Forward every batch under ``torch.inference_mode()``; unreadable inputs are skipped."""
    values, indices, targets, failures = [], [], [], []
    for part in iter_network(network, loader, runtime, progress=progress, description=description):
        failures.extend(part.failures)
        if len(part.indices):
            values.append(part.values)
            indices.append(part.indices)
            targets.append(part.targets)
    if not values:
        empty = torch.empty(0, dtype=torch.long)
        return Outputs(torch.empty(0), empty, empty, failures)
    order_indices = torch.cat(indices)
    order = torch.argsort(order_indices)
    return Outputs(
        torch.cat(values)[order], order_indices[order], torch.cat(targets)[order], failures
    )
