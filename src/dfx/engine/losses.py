"""The paper's class-weighted cross entropy: its weights, and the sums the trainers need."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from dfx.classes import CLASSES
from dfx.errors import DfxError


def class_weights(counts: np.ndarray, training_set: str) -> torch.Tensor:
    """The paper's loss weights w_c = 1 / (training images of class c).

    ``training_set`` names the set in the error raised when a class has no images.
    """
    if (counts == 0).any():
        missing = [name for name, n in zip(CLASSES, counts) if n == 0]
        raise DfxError(f"the {training_set} training set has no {', '.join(missing)} images.")
    return torch.tensor(1.0 / counts, dtype=torch.float32)


def loss_weight(loss_fn: nn.CrossEntropyLoss, targets: torch.Tensor) -> float:
    """What ``loss_fn``'s mean divides by: the class weights of ``targets``, summed."""
    if loss_fn.weight is None or not len(targets):
        return float(len(targets))
    return float(loss_fn.weight[targets.to(loss_fn.weight.device)].sum())


def summed_loss(loss_fn: nn.CrossEntropyLoss, logits, targets) -> torch.Tensor:
    """``loss_fn`` summed over the batch instead of averaged."""
    return nn.functional.cross_entropy(
        logits,
        targets,
        weight=loss_fn.weight,
        ignore_index=loss_fn.ignore_index,
        reduction="sum",
        label_smoothing=loss_fn.label_smoothing,
    )
