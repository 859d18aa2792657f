"""Seeded selections: proportional per-group draws, per-group hold-outs, balancing."""

from __future__ import annotations

import numpy as np

from dfx.engine.sampling import balance, group_by, hold_out, sample_per_group

ITEMS = (
    [("gan", i) for i in range(40)]
    + [("dm", i) for i in range(20)]
    + [("real", i) for i in range(10)]
)


def label(item):
    return item[0]


def test_group_by_keeps_first_seen_group_order_and_item_order():
    groups = group_by([3, 1, 4, 1, 5, 9, 2, 6], lambda n: n % 2)
    assert list(groups) == [1, 0]
    assert groups == {1: [3, 1, 1, 5, 9], 0: [4, 2, 6]}


def test_sample_per_group_gives_each_group_its_proportional_share():
    chosen = sample_per_group(ITEMS, label, 14, np.random.default_rng(0))
    counts = {name: sum(1 for item in chosen if item[0] == name) for name in ("gan", "dm", "real")}
    assert counts == {"gan": 8, "dm": 4, "real": 2}  # 14/70 = 1/5 of every group
    assert len(set(chosen)) == len(chosen) and set(chosen) <= set(ITEMS)
    # Within a group the input order is kept.
    assert chosen == sorted(chosen, key=ITEMS.index)
    # Every group gives at least one item, never more than it has.
    few = sample_per_group(ITEMS, label, 1, np.random.default_rng(0))
    assert sorted(item[0] for item in few) == ["dm", "gan", "real"]
    assert sample_per_group(ITEMS, label, 1000, np.random.default_rng(0)) == ITEMS
    assert sample_per_group(ITEMS, label, 0, np.random.default_rng(0)) == []
    assert sample_per_group([], label, 5, np.random.default_rng(0)) == []


def test_sample_per_group_is_seeded():
    first = sample_per_group(ITEMS, label, 14, np.random.default_rng(1))
    assert first == sample_per_group(ITEMS, label, 14, np.random.default_rng(1))
    assert first != sample_per_group(ITEMS, label, 14, np.random.default_rng(2))


def test_hold_out_keeps_back_the_fraction_of_every_group():
    train, held = hold_out(ITEMS, label, 0.2, np.random.default_rng(0))
    assert sorted(train + held) == sorted(ITEMS) and not set(train) & set(held)
    held_counts = {
        name: sum(1 for item in held if item[0] == name) for name in ("gan", "dm", "real")
    }
    assert held_counts == {"gan": 8, "dm": 4, "real": 2}
    assert train == sorted(train, key=ITEMS.index) and held == sorted(held, key=ITEMS.index)
    again = hold_out(ITEMS, label, 0.2, np.random.default_rng(0))
    assert again == (train, held)
    assert hold_out(ITEMS, label, 0.2, np.random.default_rng(1)) != (train, held)


def test_hold_out_keeps_one_of_each_side_when_it_can():
    tiny = [("a", 0), ("a", 1), ("b", 0)]
    train, held = hold_out(tiny, label, 0.01, np.random.default_rng(0))
    assert len([i for i in held if i[0] == "a"]) == 1  # a positive fraction holds out ≥ 1
    assert [i for i in train if i[0] == "a"] and ("b", 0) in train  # a lone item trains
    train, held = hold_out(tiny, label, 0.99, np.random.default_rng(0))
    assert len([i for i in train if i[0] == "a"]) == 1  # and leaves ≥ 1 to train on
    assert held.count(("b", 0)) == 1  # a lone item follows the rounded fraction
    three = [("c", 0), ("c", 1), ("c", 2)]
    train, held = hold_out(three, label, 0.01, np.random.default_rng(0))
    assert len(held) == 1 and len(train) == 2  # the minimum held out is one, not more
    train, held = hold_out(ITEMS, label, 0.0, np.random.default_rng(0))
    assert held == [] and train == ITEMS


def test_balance_samples_every_group_down_to_the_smallest():
    kept = balance(ITEMS, label, np.random.default_rng(0))
    counts = {name: sum(1 for item in kept if item[0] == name) for name in ("gan", "dm", "real")}
    assert counts == {"gan": 10, "dm": 10, "real": 10}
    assert kept == sorted(kept, key=ITEMS.index) and len(set(kept)) == 30
    assert balance(ITEMS, label, np.random.default_rng(0)) == kept
    assert balance(ITEMS, label, np.random.default_rng(1)) != kept
