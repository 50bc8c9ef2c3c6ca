"""The ServerApp's side of a cut per node: what it checks at hello, and how it averages.

The server's top slice starts after the shallowest cut the run declares (``cut`` and every
``cuts`` entry); a client with a deeper cut enters it further up (``ServerHalf.entry``). A
block between two cuts so lives on the deep clients and in the server's copy, which the
shallow clients' batches train. With ``client-sync = "average"``, every block is averaged over
all its copies, each weighted by the examples that trained it (``flsplit.layerwise``), and
each holder continues from the average: the deep clients get it back with their slice, the
server loads it into its top. Auxiliary heads differ in shape between cuts, so they are
averaged only within a cut group. After such a round every copy of a block is equal, so all
clients' paths compute one network: the run's global model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import torch
from flwr.serverapp.strategy import Strategy

from flsplit.aggregation import aggregate_weights
from flsplit.config import ConfigError, RunConfig
from flsplit.layerwise import BlockCopy, average_blocks, by_block, flat
from flsplit.split import activation_shape
from flsplit.wire import module_state
from strategies import ServerHalf, SplitStrategy


class CutClient(Protocol):
    """What this module reads of a connected client (``apps.rounds.Client``)."""

    index: int
    partition_id: int
    num_examples: int
    cut_blocks: int
    activation_shape: tuple[int, ...]


def check_cuts(clients: Sequence[CutClient], config: RunConfig, strategy: type[SplitStrategy]) -> None:
    """Refuse, at hello, a client whose cut the server's slice cannot serve, naming the node and the fix."""
    first = config.shallowest_cut_blocks
    for client in clients:
        if client.cut_blocks < first:
            raise ConfigError(
                f"invalid run config:\n  - node-config cut: client {client.partition_id} cuts after block {client.cut_blocks}, "
                f"before the server's slice, which starts after block {first} (the shallowest of cut and cuts); "
                f"set the run's cut to the shallowest node's ({client.cut_blocks}) and let deeper nodes name their own"
            )
        expected = activation_shape(config.with_cut(str(client.cut_blocks)))
        if tuple(client.activation_shape) != tuple(expected):
            raise ConfigError(
                f"invalid run config:\n  - node-config cut: client {client.partition_id}'s slice outputs "
                f"{list(client.activation_shape)} at block {client.cut_blocks}, but the server's model expects {list(expected)} "
                "there; run the same model (and flsplit version) on every node"
            )
    strategy.check_cuts(config, [c.cut_blocks for c in clients], where="node-config cut")


def average_layerwise(
    aggregator: Strategy,
    server_round: int,
    slices: Mapping[int, Mapping[str, torch.Tensor]],
    clients: Sequence[CutClient],
    server: ServerHalf,
    shallowest: int,
) -> dict[int, dict[str, torch.Tensor]]:
    """Average the clients' ``slices`` (client index -> ``bottom.*``/``aux.*`` weights) and the server's
    top copies block by block; load the server's share; return each client's averaged slice.

    ``shallowest`` is the shallowest cut: the server's top starts at the block after it.
    """
    by_index = {c.index: c for c in clients}
    copies: dict[int, list[BlockCopy]] = {}
    for index, weights in slices.items():
        bottom = {k.removeprefix("bottom."): v for k, v in weights.items() if k.startswith("bottom.")}
        for block, held in by_block(bottom).items():
            copies.setdefault(block, []).append((held, by_index[index].num_examples))
    for top, trained_by in server.top_copies():
        for block, held in by_block(module_state(top)).items():
            examples = sum(by_index[i].num_examples for i in trained_by if i in by_index and by_index[i].cut_blocks < block)
            copies.setdefault(block, []).append((held, examples))
    averaged = average_blocks(aggregator, server_round, copies)
    server.load_averaged_top(flat(averaged, shallowest + 1))
    heads = _average_heads(aggregator, server_round, slices, by_index)
    # A block or head the rule declined stays as the client sent it, so every slice comes back whole.
    return {
        index: dict(weights)
        | {f"bottom.{key}": value for key, value in flat(averaged, 0, by_index[index].cut_blocks).items()}
        | heads.get(by_index[index].cut_blocks, {})
        for index, weights in slices.items()
    }


def _average_heads(
    aggregator: Strategy, server_round: int, slices: Mapping[int, Mapping[str, torch.Tensor]], by_index: Mapping[int, CutClient]
) -> dict[int, dict[str, torch.Tensor]]:
    """The auxiliary heads (``aux.*``), averaged within each cut group (cut blocks -> weights)."""
    groups: dict[int, list[tuple[dict[str, torch.Tensor], int]]] = {}
    for index, weights in slices.items():
        head = {k: v for k, v in weights.items() if k.startswith("aux.")}
        if head:
            client = by_index[index]
            groups.setdefault(client.cut_blocks, []).append((head, client.num_examples))
    averaged = {cut: aggregate_weights(aggregator, server_round, held) for cut, held in groups.items()}
    return {cut: weights for cut, weights in averaged.items() if weights is not None}
