"""Seeded selections of manifest rows: deliberately unbalanced sets, hold-outs, balancing."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def group_by(items: Sequence[T], key: Callable[[T], Hashable]) -> dict[Hashable, list[T]]:
    """Items grouped by ``key``, groups in first-seen order, items in input order."""
    groups: dict[Hashable, list[T]] = defaultdict(list)
    for item in items:
        groups[key(item)].append(item)
    return dict(groups)


def sample_per_group(
    items: Sequence[T], key: Callable[[T], Hashable], count: int, rng: np.random.Generator
) -> list[T]:
    """About ``count`` items drawn so that every group gives its proportional share (≥ 1)."""
    if count <= 0 or not items:
        return []
    fraction = min(1.0, count / len(items))
    chosen: list[T] = []
    for members in group_by(items, key).values():
        take = min(len(members), max(1, round(fraction * len(members))))
        picks = rng.choice(len(members), size=take, replace=False)
        chosen.extend(members[i] for i in sorted(picks))
    return chosen


def hold_out(
    items: Sequence[T], key: Callable[[T], Hashable], fraction: float, rng: np.random.Generator
) -> tuple[list[T], list[T]]:
    """Split into (train, held out) with ``fraction`` of each group held out."""
    train: list[T] = []
    held: list[T] = []
    for members in group_by(items, key).values():
        order = rng.permutation(len(members))
        n_held = int(round(fraction * len(members)))
        if len(members) > 1:
            n_held = min(max(n_held, 1 if fraction > 0 else 0), len(members) - 1)
        held.extend(members[i] for i in sorted(order[:n_held]))
        train.extend(members[i] for i in sorted(order[n_held:]))
    return train, held


def balance(items: Sequence[T], key: Callable[[T], Hashable], rng: np.random.Generator) -> list[T]:
    """Every group sampled down to the size of the smallest one; input order kept."""
    positions = group_by(range(len(items)), lambda i: key(items[i]))
    smallest = min(len(members) for members in positions.values())
    kept: list[int] = []
    for members in positions.values():
        kept.extend(members[i] for i in rng.choice(len(members), size=smallest, replace=False))
    return [items[i] for i in sorted(kept)]
