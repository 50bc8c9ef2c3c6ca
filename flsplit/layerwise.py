"""Layer-wise averaging of a network whose blocks several parties hold (a cut per node).

With mixed cuts, block ``b`` exists in several copies: in the bottom slice of every client
whose cut is at or after ``b``, and in the server's top slice for the clients whose cut is
before it (one shared copy, or SplitFed-V1's copy per client). Each copy was trained on the
examples of the clients whose batches passed through it. Averaging is per block, over every
copy of that block, weighted by those examples, with the run's Flower aggregation rule; every
holder then continues from the average. With one cut for all, this is the ordinary average
of the client slices (the server's top is then the only copy of its blocks).

Weights are flat state dicts of slices of the network's ``Sequential``, which keep the
network's block numbers: ``"3.conv1.weight"`` is block 3 in a client's bottom slice and in
the server's top alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from flwr.serverapp.strategy import Strategy

from flsplit.aggregation import aggregate_weights

#: One copy of a block: its weights (names inside the block) and the examples that trained it.
BlockCopy = tuple[Mapping[str, torch.Tensor], int]
#: Weights by network block, each a dict of names inside the block.
Blocks = dict[int, dict[str, torch.Tensor]]


def by_block(weights: Mapping[str, torch.Tensor]) -> Blocks:
    """Split a slice's flat weights by network block."""
    blocks: Blocks = {}
    for key, value in weights.items():
        index, _, name = key.partition(".")
        blocks.setdefault(int(index), {})[name] = value
    return blocks


def flat(blocks: Mapping[int, Mapping[str, torch.Tensor]], first: int = 0, last: int | None = None) -> dict[str, torch.Tensor]:
    """The flat weights of blocks ``first..last`` (inclusive; ``None``: to the end)."""
    return {
        f"{block}.{name}": value
        for block, weights in sorted(blocks.items())
        if block >= first and (last is None or block <= last)
        for name, value in weights.items()
    }


def average_blocks(aggregator: Strategy, server_round: int, copies: Mapping[int, Sequence[BlockCopy]]) -> Blocks:
    """The average of every block over its copies, weighted by the examples that trained each.

    A copy that no example trained this round (weight 0) does not vote. A block that the
    aggregation rule declines (too few copies for Krum, say) is left out: its holders keep
    their own weights.
    """
    averaged: Blocks = {}
    for block, held in sorted(copies.items()):
        voting = [(weights, examples) for weights, examples in held if examples > 0]
        average = aggregate_weights(aggregator, server_round, voting) if voting else None
        if average is not None:
            averaged[block] = average
    return averaged
